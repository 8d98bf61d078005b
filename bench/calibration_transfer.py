"""Do calibrated decisions carry over to schedules not used in calibration?  (CPU, real ComfyUI, small model.)

    COMFYUI_PATH=... python bench/calibration_transfer.py [--md out.md]

A Wan model with ComfyUI's own classes and random weights (small: the CPU has to sample it ~200 times) is
calibrated once at 20 steps (euler, ``simple``).  Every other schedule -- 30 and 50 steps, another sampler and
scheduler (``dpmpp_2m`` + ``beta``, ``uni_pc`` + ``sgm_uniform``) -- is then calibrated directly as the ground
truth, and the decisions the 20-step calibration gives at that schedule's timesteps are compared with it, for
three ways of carrying them over:

* ``nearest``: the decisions of the nearest calibrated timestep (a timestep-keyed table, no interpolation);
* ``linear``: errors interpolated linearly in t, then the rule (the pack's rule before the planted measurement);
* ``interp``: ``log(error + 0.001)`` interpolated linearly in t, then the rule (``errors_at``: what the fit targets);
* ``router``: the fitted router itself (official form, read through ``RouterSet.decide`` as sampling does).

A second 20-step calibration with another seed and prompt is the noise floor: how much calibration varies on the
very schedule it was made on.  Columns: agreement with the direct calibration's decisions; the mean error of the
chosen branches measured by the direct calibration (what the run really gets), against the direct calibration's own;
the share of chosen sparse heads whose real error exceeds the budget by more than 20 %; attention FLOPs saved.
"At switches" is the agreement on the switch cells alone (``switching``): the (step, layer, head) cells of the applied
schedule whose two bracketing calibrated steps decide differently, the only cells where the three ways can differ;
in parentheses their share of all cells.  ``bench/calibration_transfer_planted.py`` measures the same on planted heads
whose branch switches with the noise level (engine level, no ComfyUI).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch

from comfyui_vorta.vorta.calibration_fit import FitReport, fit_routers, grid_targets, router_features
from comfyui_vorta.vorta.calibration_rule import branch_costs, chosen_error, decide, errors_at
from comfyui_vorta.vorta.config import FULL, VortaConfig
from comfyui_vorta.vorta.router import RouterSet, official_layer_names
from comfyui_vorta.vorta.timestep import router_input
from e2e import Spec, _wan_unet, build_model, import_comfy

SPEC = Spec("wan-small", "wan", "small Wan (random weights)", _wan_unet(512, 1024, 4, 4), (112, 160), 25, 16, 8, 16,
            full_warmup=True, budget_s=0.0)
CONFIG = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(1, 2, 2), ratio=0.5)
SCHEDULES = [("euler", "simple", 30), ("euler", "simple", 50), ("dpmpp_2m", "beta", 20), ("uni_pc", "sgm_uniform", 30)]


def conditioning(seed: int):
    g = torch.Generator().manual_seed(seed)
    c = torch.zeros(1, 512, 4096)
    c[:, :12] = torch.randn(1, 12, 4096, generator=g)
    return [[c, {}]]


def run(model, sampler: str, scheduler: str, steps: int, seed: int, fraction: float):
    import comfy.samplers

    from comfyui_vorta.vorta.comfy.calibrate import calibrate

    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps).cpu()
    shape = (1, SPEC.channels, (SPEC.frames - 1) // 4 + 1, SPEC.res[0] // 8, SPEC.res[1] // 8)
    return calibrate(model, conditioning(seed), conditioning(seed + 1000), {"samples": torch.zeros(shape)}, sigmas,
                     comfy.samplers.sampler_object(sampler), 5.0, seed, True, CONFIG, fraction)


def nearest_at(cal_t: torch.Tensor, cal_values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(M, ...) the value of the nearest calibrated timestep (the simple table the interpolation is compared to)."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    idx = (t[:, None] - cal_t.double()[None, :]).abs().argmin(1)
    return cal_values[idx]


def switching(cal_t: torch.Tensor, cal_decisions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(M, layers, heads) bool: the cells of timesteps ``t`` whose two bracketing calibrated timesteps decide
    differently -- the only cells where the ways of carrying decisions over can differ between calibrated steps (a
    t on a calibrated timestep or outside the calibrated range has no switch to place: every way uses that step)."""
    order = torch.argsort(cal_t)
    ct, cd = cal_t[order].double(), cal_decisions[order]
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    n = ct.numel()
    if n < 2:
        return torch.zeros(t.numel(), *cd.shape[1:], dtype=torch.bool)
    hi = torch.searchsorted(ct, t).clamp(1, n - 1)
    inside = (t > ct[0]) & (t < ct[-1]) & ~(t[:, None] == ct[None, :]).any(1)
    return inside.reshape(-1, *([1] * (cd.ndim - 1))) & (cd[hi - 1] != cd[hi])


def compare(errors: torch.Tensor, decisions: torch.Tensor, costs: torch.Tensor, budget: float,
            at: torch.Tensor) -> Dict[str, float]:
    """``decisions`` scored against the directly calibrated ``errors`` (steps, layers, heads, 3) of a schedule;
    ``at`` marks its switch cells (``switching``), where agreement is also scored on its own."""
    real = chosen_error(errors, decisions)
    sparse = decisions != FULL
    over = (real > budget * 1.2) & sparse
    agree = decisions == decide(errors, costs, budget)
    return {"agree": float(agree.double().mean()), "error": float(real.nanmean()),
            "over": float(over.sum()) / max(1, int(sparse.sum())), "saved": 1.0 - float(costs[decisions].mean()),
            "switch": float(agree[at].double().mean()) if bool(at.any()) else float("nan"),
            "switches": float(at.double().mean())}


def knobs(errors: torch.Tensor, quantiles=(0.25, 0.5, 0.75)) -> List[float]:
    """Knob values: quantiles of the smaller sparse error over every calibrated (step, layer, head)."""
    minimum = torch.minimum(errors[..., 1], errors[..., 2]).flatten()
    return [float(minimum.quantile(q)) for q in quantiles]


def fit_per_knob(family: str, mlp, cal_t: torch.Tensor, cal_errors: torch.Tensor, costs: torch.Tensor,
                 budgets) -> Tuple[Dict[float, RouterSet], Dict[float, FitReport]]:
    """One router per knob value, fitted by the pack's own code (``calibration_fit``) on ``mlp``'s features, and
    the fit's reports."""
    names = official_layer_names(family, cal_errors.shape[1])
    routers, reports = {}, {}
    for b in budgets:
        grid, targets, anchors = grid_targets(family, cal_t, cal_errors, costs, b)
        routers[b], reports[b] = fit_routers(family, names, router_features(family, mlp, grid), targets, anchors)
    return routers, reports


def transfer(cal_t, cal_errors, truth_t, truth_errors, costs, routers: Dict[float, RouterSet], family: str,
             mlp) -> list:
    """Per knob of ``routers``: (knob, the direct calibration's own scores, {way: scores}) for the three ways of
    carrying the calibration (``cal_t``, ``cal_errors``) over to a schedule calibrated directly (``truth_*``)."""
    out = []
    for b, router in routers.items():
        cal_dec = decide(cal_errors, costs, b)
        at = switching(cal_t, cal_dec, truth_t)
        ways = {"nearest": nearest_at(cal_t, cal_dec, truth_t),
                "linear": decide(errors_at(cal_t, cal_errors, truth_t, "linear"), costs, b),
                "interp": decide(errors_at(cal_t, cal_errors, truth_t), costs, b),
                "router": torch.stack([router.decide(router_input(family, mlp, torch.tensor([float(x)])))
                                       for x in truth_t])}
        own = compare(truth_errors, decide(truth_errors, costs, b), costs, b, at)
        out.append((b, own, {k: compare(truth_errors, d, costs, b, at) for k, d in ways.items()}))
    return out


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.1%}"  # NaN: no switch cell


WAYS = ("nearest", "linear", "interp", "router")


def table(rows) -> List[str]:
    """Markdown table of (schedule, knob, own, cells) rows (``transfer``)."""
    ways = " / ".join(WAYS)
    lines = [f"| applied to | max_error | agreement {ways} | at switches (share of cells): {ways} | mean real error: "
             f"direct / {ways} | sparse heads over budget x1.2: {ways} | FLOPs saved: direct / {ways} |",
             "|---|---|---|---|---|---|---|"]
    for name, b, own, c in rows:
        w = [c[k] for k in WAYS]
        lines.append(f"| {name} | {b:.3f} | {' / '.join(_pct(x['agree']) for x in w)} | ({own['switches']:.1%}) "
                     f"{' / '.join(_pct(x['switch']) for x in w)} | {own['error']:.3f} / "
                     f"{' / '.join(format(x['error'], '.3f') for x in w)} | {' / '.join(_pct(x['over']) for x in w)} "
                     f"| {own['saved']:.1%} / {' / '.join(format(x['saved'], '.1%') for x in w)} |")
    return lines


def write(text: str, md: Optional[str]) -> None:
    print(text)
    if md:
        with open(md, "w") as f:
            f.write(text + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/calibration_transfer.py")
    ap.add_argument("--md", help="also write the table to this markdown file")
    ap.add_argument("--fraction", type=float, default=1.0, help="sampled share of query tiles (1: all, exact)")
    args = ap.parse_args(argv)
    import_comfy(cpu=True)
    torch.manual_seed(0)
    start = time.perf_counter()
    model, _ = build_model(SPEC, torch.float32)
    base = run(model, "euler", "simple", 20, 0, args.fraction)
    costs = branch_costs(base.problem)
    cal = base.calibration
    mlp = base.adapter.time_mlp(model.get_model_object("diffusion_model"))
    routers, _ = fit_per_knob("wan", mlp, cal.t, cal.errors, costs, knobs(cal.errors))
    truths = [("euler/simple 20, other seed+prompt (noise floor)", run(model, "euler", "simple", 20, 7, args.fraction))]
    truths += [(f"{s}/{sch} {n}", run(model, s, sch, n, 0, args.fraction)) for s, sch, n in SCHEDULES]
    rows = [(name, *r) for name, truth in truths
            for r in transfer(cal.t, cal.errors, truth.calibration.t, truth.calibration.errors, costs, routers, "wan",
                              mlp)]
    lines = [f"{datetime.date.today()} | CPU | torch {torch.__version__} | {SPEC.title}: {SPEC.unet['num_layers']} "
             f"layers x {SPEC.unet['num_heads']} heads, dim {SPEC.unet['dim']}, grid "
             f"{'x'.join(map(str, base.problem.grid.shape))}, tile {CONFIG.tile} window {CONFIG.window} bucket "
             f"{CONFIG.bucket}, CFG 5, calibrated at euler/simple 20 steps; knobs = quartiles of the 20-step minimum "
             f"sparse error; {time.perf_counter() - start:.0f} s", ""]
    write("\n".join(lines + table(rows)), args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
