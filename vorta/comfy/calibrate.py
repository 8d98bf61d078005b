"""Calibration inside ComfyUI: the user's own sampling run, with every self-attention call measured.

``CalibrationPatch`` reuses Apply VORTA's plumbing (``VortaPatch``: the tagged self-attention sites and the
per-model-call token layout), but its override runs what ComfyUI would run for the call -- exact full attention on
the selected backend -- and, beside it, the coreset and sliding branches on a sample of query tiles
(``vorta.calibrate.branch_errors``, with the dense output as the reference, so no extra full attention).  The
sampled trajectory is therefore exactly the dense model's: the calibration measures each branch where the user's
sampler actually goes, with their CFG, prompts and latents.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Optional

import torch

from ..calibrate import DEFAULT_FRACTION, branch_errors
from ..calibration_table import Calibration, CalibrationTable
from ..config import VortaConfig
from ..routing import as_bshd
from .adapters import detect
from .install import VortaPatch
from .override import PREFERRED, PREV, STATE, TAG, Delegate, check_call
from .settings import Settings

log = logging.getLogger("vorta")


class CalibrationPatch(VortaPatch):
    """Measures the branches beside the model's own attention; routes nothing."""

    def __init__(self, adapter, config: Optional[VortaConfig], model_sampling, fraction: float,
                 table: CalibrationTable):
        settings = Settings(mode="full", preset="custom" if config is not None else "auto", config=config)
        super().__init__(adapter, settings, None, model_sampling)
        self.table = table
        self.fraction = fraction
        self.problem = None  # the attention problem of the last measured call (the calibrated grid)

    def outer_sample_wrapper(self, executor, *args, **kwargs):
        guider = executor.class_obj
        try:
            ms = guider.model_patcher.get_model_object("model_sampling")
        except Exception:  # pragma: no cover - exotic guiders
            ms = None
        self.plan.reset(ms)
        try:
            return executor(*args, **kwargs)
        finally:
            self.plan.reset()
            self._local.state = None

    def _attention(self, func, *args, **kwargs):
        """Replaces ``VortaPatch._attention`` (wrapped eager and marked as ours in ``VortaPatch.__init__``)."""
        opts = kwargs.get("transformer_options") or {}
        out = Delegate(func, opts.get(PREV), opts.get(PREFERRED)).exact(*args, **kwargs)
        tag, state = opts.get(TAG), opts.get(STATE)
        if tag is None:
            return out
        if tag[0] == "vace":
            self.table.skip("VACE blocks (no routers; they run full attention)")
            return out
        if state is None or state.step is None:
            self.table.skip("no token layout for this call")
            return out
        q, k, v = args[0], args[1], args[2]
        heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
        reason, layout, text_valid = check_call(q, k, v, heads, kwargs, opts, state)
        if reason is not None:
            self.table.skip(reason)
            return out
        problem = state.problem if text_valid is None else dataclasses.replace(state.problem, text_valid=text_valid)
        layer = tag[1] if tag[0] != "single" else self.adapter.double + tag[1]
        qs, ks, vs = (as_bshd(x, layout, heads) for x in (q, k, v))
        try:
            with torch.no_grad():
                e = branch_errors(qs, ks, vs, problem, full_out=as_bshd(out, "wan", heads), fraction=self.fraction,
                                  salt=layer * 100003 + int(round(state.t * 16)))
        except torch.cuda.OutOfMemoryError:  # the measurement must not end the user's run; the report counts it
            self.table.skip("out of GPU memory while measuring (lower sample_fraction)")
            return out
        self.table.add(state.t, state.sigma, layer, e)
        self.problem = state.problem
        return out



@dataclasses.dataclass
class CalibrationRun:
    calibration: Calibration
    latent: dict  # the sampled LATENT (to chain the second expert of a two-expert model)
    adapter: object
    problem: object  # the attention problem of the calibrated grid (costs, report)
    seconds: float
    model_sampling: object


def calibration_model(model, config: Optional[VortaConfig] = None, fraction: float = DEFAULT_FRACTION):
    """(clone of ``model`` that measures every self-attention call, its CalibrationPatch); the measurements pool in
    ``holder.table``.  ``calibrate`` samples with it; the device benchmark times its steps."""
    dm = model.get_model_object("diffusion_model")
    adapter = detect(dm)
    holder = CalibrationPatch(adapter, config, model.get_model_object("model_sampling"), fraction,
                              CalibrationTable(adapter.num_layers, adapter.heads))
    m = model.clone()
    holder.install(m)
    return m, holder


def _fixed_latent(model, latent: dict) -> torch.Tensor:
    import comfy.sample

    fix = comfy.sample.fix_empty_latent_channels
    names = inspect.signature(fix).parameters
    extra = {k: latent.get(k) for k in ("downscale_ratio_spacial", "downscale_ratio_temporal") if k in names}
    return fix(model, latent["samples"], **extra)


def calibrate(model, positive, negative, latent: dict, sigmas: torch.Tensor, sampler, cfg: float, seed: int,
              add_noise: bool = True, config: Optional[VortaConfig] = None,
              fraction: float = DEFAULT_FRACTION) -> CalibrationRun:
    """Sample like SamplerCustom (the user's sampler, CFG, SIGMAS, noise and ComfyUI's progress bar) with the
    calibration patch on a clone of ``model``; return the pooled measurement and the sampled latent."""
    import time

    import comfy.sample
    import comfy.utils
    import latent_preview
    from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise, Noise_RandomNoise

    m, holder = calibration_model(model, config, fraction)
    adapter, ms, table = holder.adapter, holder.plan.model_sampling, holder.table
    out = latent.copy()
    x = _fixed_latent(m, latent)
    out["samples"] = x
    noise = (Noise_RandomNoise(seed) if add_noise else Noise_EmptyNoise()).generate_noise(out)
    callback = latent_preview.prepare_callback(m, sigmas.shape[-1] - 1, {})
    start = time.perf_counter()
    samples = comfy.sample.sample_custom(m, noise, cfg, sampler, sigmas, positive, negative, x,
                                         noise_mask=latent.get("noise_mask"), callback=callback,
                                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    seconds = time.perf_counter() - start
    out = dict(out)
    out["samples"] = samples
    if holder.problem is None:
        raise ValueError("calibration measured no self-attention call of a video grid: " +
                         ("; ".join(table.skipped) or "the sampler never ran the model"))
    return CalibrationRun(table.result(), out, adapter, holder.problem, seconds, ms)
