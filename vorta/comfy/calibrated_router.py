"""From a calibration run to a router file: the decision rule at the user's knob, the fit, the metadata, and a
save into ``models/vorta`` that never overwrites a file."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List

import torch

from ..calibrate import DEFAULT_FRACTION
from ..calibration_file import (CALIBRATION_VERSION, ERROR_METRIC, encode_decisions, encode_errors, pack_version,
                                time_fingerprint)
from ..calibration_fit import FitReport, fit_routers, grid_targets, router_features
from ..calibration_rule import DEFAULT_BUDGETS, LOG_OFFSET, TradeoffPoint, branch_costs, decide, evaluate, tradeoff
from ..router import RouterSet, official_layer_names
from ..router_files import save_safetensors
from .calibrate import CalibrationRun
from .calibration_report import step_stats
from .run_info import expert_part, model_file_name, model_shift, sampler_name, scheduler_name


@dataclass
class CalibratedRouter:
    routers: RouterSet
    decisions: torch.Tensor  # (steps, layers, heads) at the calibrated timesteps
    chosen: TradeoffPoint
    curve: List[TradeoffPoint]
    fit: FitReport
    stats: List[dict]
    fingerprint: torch.Tensor  # time_fingerprint of the model calibrated on


def layer_names(adapter) -> List[str]:
    if adapter.family == "wan":
        return official_layer_names("wan", adapter.num_layers)
    return official_layer_names("hunyuan", double=adapter.double, single=adapter.single)


def build_router(run: CalibrationRun, time_mlp, max_error: float) -> CalibratedRouter:
    """The rule at ``max_error`` on the calibrated steps, the trade-off curve, and routers fitted to the rule over
    every timestep (``calibration_fit``)."""
    cal, a = run.calibration, run.adapter
    costs = branch_costs(run.problem)
    decisions = decide(cal.errors, costs, max_error)
    grid, targets, anchors = grid_targets(a.family, cal.t, cal.errors, costs, max_error)
    features = router_features(a.family, time_mlp, grid)
    routers, fit = fit_routers(a.family, layer_names(a), features, targets, anchors)
    budgets = sorted(set(DEFAULT_BUDGETS) | {float(max_error)})
    return CalibratedRouter(routers, decisions, evaluate(cal.errors, costs, max_error),
                            tradeoff(cal.errors, costs, budgets), fit, step_stats(cal, decisions),
                            time_fingerprint(a.family, time_mlp))


def calibration_metadata(run: CalibrationRun, result: CalibratedRouter, model, sigmas: torch.Tensor, sampler,
                         cfg: float, seed: int, max_error: float, fraction: float = DEFAULT_FRACTION) -> Dict[str, str]:
    """Everything ``calibration_file`` documents, as metadata strings."""
    cal, ms = run.calibration, run.model_sampling
    grid = run.problem.grid.shape
    shift = model_shift(ms)
    return {
        "calibrated": "1", "calibration_version": CALIBRATION_VERSION, "pack_version": pack_version(),
        "model_class": type(model.get_model_object("diffusion_model")).__name__,
        "max_error": repr(float(max_error)), "knob": "max_error", "error_metric": ERROR_METRIC,
        "decision_rule": "cheapest branch (attention FLOPs) whose calibrated error <= max_error, else full",
        "interpolation": f"log(error + {LOG_OFFSET:g}) linear in t between calibrated timesteps, constant beyond; "
                         "routers fitted to it",
        "sample_fraction": repr(float(fraction)), "calibration_grid": ",".join(map(str, grid)),
        "text_tokens": str(run.problem.text_len),
        "sampler": sampler_name(sampler), "scheduler": scheduler_name(ms, sigmas), "steps": str(sigmas.numel() - 1),
        "shift": "" if shift is None else repr(shift), "cfg": repr(float(cfg)), "seed": str(int(seed)),
        "sigmas": json.dumps([round(float(s), 6) for s in sigmas.reshape(-1).tolist()]),
        "sigma_max": repr(float(cal.sigma.max())), "sigma_min": repr(float(cal.sigma.min())),
        "expert": expert_part(ms, sigmas),
        "calibration_t": json.dumps([round(float(t), 4) for t in cal.t.tolist()]),
        "calibration_decisions": encode_decisions(result.decisions),
        "calibration_errors": encode_errors(cal.errors), "calibration_errors_shape": json.dumps(list(cal.errors.shape)),
        "step_stats": json.dumps(result.stats, separators=(",", ":")),
        "flops_saved": f"{result.chosen.saved:.4f}", "mean_error": f"{result.chosen.mean_error:.4f}",
        "fit": json.dumps({"calibrated_agreement": result.fit.calibrated_agreement,
                           "grid_agreement": result.fit.grid_agreement, "rcond": result.fit.rcond,
                           "rank": result.fit.rank}),
        "calibration_seconds": f"{run.seconds:.1f}",
        "time_fingerprint": json.dumps([[float(f"{v:.6g}") for v in row] for row in result.fingerprint.tolist()]),
    }


_NAME = re.compile(r"^[\w\-. ]+$")


def target_path(folder: str, name: str) -> tuple:
    """(path, note): ``folder/name.safetensors`` where ``name`` may hold sub-folders; an existing file is never
    overwritten -- the name gets ``_2``, ``_3``, ... and the note says so."""
    name = (name or "").strip().replace("\\", "/")
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") or not _NAME.match(p) for p in parts) or name.startswith("/"):
        raise ValueError(f"router file name {name!r}: use letters, digits, '-', '_', '.' and '/' for sub-folders "
                         "of models/vorta (no '..', no absolute path)")
    base = os.path.join(folder, *parts)
    path, n = base + ".safetensors", 1
    while os.path.exists(path):
        n += 1
        path = f"{base}_{n}.safetensors"
    note = "" if n == 1 else f" ({os.path.basename(base)}.safetensors exists; not overwritten)"
    return path, note


def save_router(result: CalibratedRouter, run: CalibrationRun, meta: Dict[str, str], model, folder: str,
               name: str, model_file: str = "") -> tuple:
    """Write the file (never over another) and load it back through the Router Loader's own path, so the ROUTER
    handed to Apply VORTA is exactly what the file gives.  Returns (path, note, RouterBundle)."""
    from .loading import load_bundle

    path, note = target_path(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model_name = (model_file_name(model) or model_file
                  or f"{meta['model_class']} (file name not recorded by this ComfyUI)")
    save_safetensors(result.routers, path, run.problem.config, model=model_name, extra=meta)
    return path, note, load_bundle(path)
