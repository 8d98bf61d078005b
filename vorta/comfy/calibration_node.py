"""What the VORTA Calibrate Router node does, without the node schema: sample and measure, fit, save, report."""
from __future__ import annotations

import logging
from typing import Optional

import torch

from ..calibrate import DEFAULT_FRACTION
from ..config import VortaConfig
from ..geometry import coreset_density, sliding_density
from .calibrate import calibrate
from .calibrated_router import build_router, calibration_metadata, save_router
from .calibration_report import report_image, report_text
from .folders import router_folder
from .settings import describe_config

log = logging.getLogger("vorta")


def measurement_cost(problem, fraction: float) -> float:
    """Attention FLOPs of the measurement relative to one dense attention call (the coreset selection aside)."""
    c = problem.config
    sparse = coreset_density(problem.grid, c.bucket, c.ratio) ** 0.5 + sliding_density(problem.grid, c.tile, c.window)
    return min(1.0, fraction) * sparse


def run_calibration(model, positive, negative, latent: dict, sigmas: torch.Tensor, sampler, cfg: float, seed: int,
                    add_noise: bool, max_error: float, filename: str, config: Optional[VortaConfig] = None,
                    fraction: float = DEFAULT_FRACTION, folder: Optional[str] = None, model_file: str = ""):
    """Returns (RouterBundle, sampled LATENT, report text, IMAGE); the router file is in ``folder``
    (``models/vorta`` by default).  ``model_file``: the loaded file as the prompt names it, where the MODEL does
    not record it (older ComfyUI)."""
    if not 0.0 <= max_error:
        raise ValueError(f"max_error must be >= 0, got {max_error}")
    if sigmas.numel() < 2:
        raise ValueError("calibration needs at least one sampling step (SIGMAS with 2 or more values)")
    run = calibrate(model, positive, negative, latent, sigmas, sampler, cfg, seed, add_noise, config, fraction)
    dm = model.get_model_object("diffusion_model")
    result = build_router(run, run.adapter.time_mlp(dm), max_error)
    meta = calibration_metadata(run, result, model, sigmas, sampler, cfg, seed, max_error, fraction)
    folder = folder or router_folder()
    path, note, bundle = save_router(result, run, meta, model, folder, filename, model_file)
    a, p, cal = run.adapter, run.problem, run.calibration
    header = [
        f"VORTA calibration: {bundle.routers.metadata.get('model')} ({a.family}, {a.num_layers} layers x {a.heads} "
        f"heads), grid {'x'.join(map(str, p.grid.shape))}{f' + {p.text_len} text' if p.text_len else ''}, "
        f"{describe_config(p.config)}",
        f"run: sampler {meta['sampler']}, scheduler {meta['scheduler']}, {meta['steps']} steps, cfg {cfg:g}, shift "
        f"{meta['shift'] or '-'}; {cal.steps} timesteps measured (sigma {float(cal.sigma.max()):.4f} to "
        f"{float(cal.sigma.min()):.4f}, part of the schedule: {meta['expert']}) in {run.seconds:.1f} s",
        f"metric: {meta['error_metric']}; {fraction:.1%} of the query tiles of every call measured "
        f"({cal.rows} query rows per head in all), costing about {measurement_cost(p, fraction):.1%} of a dense "
        "attention call per call beside the dense attention itself",
        f"saved: {path}{note}",
        result.fit.describe(),
    ]
    footer = ["", "Between calibrated steps the errors are interpolated in t on a log scale (constant beyond the "
                  "calibrated range); other step counts and schedulers use the same router. To trade speed for "
                  "error differently, calibrate again with another max_error (the table above is what you get)."]
    text = report_text(header, cal, result.chosen, result.curve, result.stats, footer)
    log.info("VORTA: calibrated router saved to %s (%s)", path, result.fit.describe())
    groups = a.layer_groups if len(a.layer_groups) > 1 else None
    image = report_image(result.decisions, result.curve, max_error, groups)
    return bundle, run.latent, text, image
