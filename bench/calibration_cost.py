"""What calibration costs on the GPU: time per calibrated step relative to a dense step, and peak memory (issue 14).

    python bench/calibration_cost.py --model wan14b,wan5b [--md out.md]   # CUDA GPU, COMFYUI_PATH set
    python bench/calibration_cost.py --tiny                               # CPU smoke run

Same set-up as ``e2e`` (real architectures at their real sizes from ComfyUI's own classes, random bf16 weights,
``build_model`` / ``conditioning``, CFG 5 through ComfyUI's ``CFGGuider``): a step is one call of the sampler's model
at a sigma of a 50-step ``simple`` schedule (cond + uncond, batched by ComfyUI when its memory rule allows).

* ``dense``: the unpatched model on ComfyUI's attention.
* ``calibrated``: the model from ``vorta.comfy.calibrate.calibration_model`` -- what VORTA Calibrate Router samples
  with: ComfyUI's own attention for every call, plus the coreset and sliding branches on ``--fraction`` of the query
  tiles of every self-attention call, pooled into the calibration table.
* ``fit``: fitting and checking the router on the table the calibrated steps filled (host, fp64), once per run.

Peak memory is ``torch.cuda.max_memory_allocated`` over each configuration's steps, weights included. Targets from
the issue: a calibrated step at most 3x a dense one, peak memory at most +10 %.  Prints one markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import logging
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

from comfyui_vorta.vorta.calibrate import DEFAULT_FRACTION
from comfyui_vorta.vorta.config import VortaConfig, preset_for
from comfyui_vorta.vorta.geometry import grid_from_latent
from e2e import MODELS, SCHEDULE_STEPS, TINY, build_model, conditioning, import_comfy, latent_shape, parse_res

DEFAULT_MODELS = "wan14b,wan5b"


def timed_steps(model, spec, shape, sigmas, indices: List[int], cuda: bool):
    """(ms per step, peak bytes) for model calls at ``sigmas[i]`` through ComfyUI's CFGGuider."""
    import comfy.samplers

    times: List[float] = []

    def sampler_fn(model_k, noise, sigmas_, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        x = noise
        s_in = x.new_ones([x.shape[0]])
        for i in indices:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model_k(x, sigmas_[i] * s_in, **extra_args)
            if cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1000.0)
        return x

    pos, neg = conditioning(spec)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(spec.cfg)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        guider.sample(noise, torch.zeros(shape), comfy.samplers.KSAMPLER(sampler_fn), sigmas, disable_pbar=True, seed=0)
    return times, (torch.cuda.max_memory_allocated() if cuda else float("nan"))


def measure(spec, args, cuda: bool) -> Dict[str, object]:
    import comfy.model_management as mm
    import comfy.samplers

    from comfyui_vorta.vorta.comfy.calibrate import CalibrationRun, calibration_model
    from comfyui_vorta.vorta.comfy.calibrated_router import build_router

    dtype = torch.bfloat16 if cuda else torch.float32
    res = parse_res(None if args.tiny else args.res, spec)
    frames = spec.frames if (args.tiny or not args.frames) else args.frames
    shape = latent_shape(spec, res, frames)
    base, _ = build_model(spec, dtype)
    dm = base.model.diffusion_model
    grid = grid_from_latent(shape[2:], (1, 2, 2))
    config = (VortaConfig(tile=(1, 2, 2), bucket=(1, 2, 2)) if args.tiny
              else preset_for(spec.family, grid.shape, int(getattr(dm, "dim", 0)) or None).config)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "simple", SCHEDULE_STEPS).cpu()
    mid = SCHEDULE_STEPS // 2
    idx = [mid + i for i in range(args.steps)]
    row: Dict[str, object] = {"title": spec.title, "res": f"{res[1]}x{res[0]}", "frames": frames,
                              "grid": "x".join(map(str, grid.shape)), "config": config}
    small = shape[:2] + (min(shape[2], 5), max(2, shape[3] // 4 * 2), max(2, shape[4] // 4 * 2))
    patched, holder = calibration_model(base, config, args.fraction)
    timed_steps(base, spec, small, sigmas, [mid], cuda)  # CUDA context, cuBLAS, allocator
    timed_steps(patched, spec, small, sigmas, [mid], cuda)
    holder.table = type(holder.table)(holder.table.layers, holder.table.heads)  # drop the warm-up's timestep
    row["dense"], row["dense_peak"] = timed_steps(base, spec, shape, sigmas, idx, cuda)
    print(f"  dense: {row['dense']} ms, peak {row['dense_peak'] / 2**30:.2f} GiB", flush=True)
    row["cal"], row["cal_peak"] = timed_steps(patched, spec, shape, sigmas, idx, cuda)
    print(f"  calibrated: {row['cal']} ms, peak {row['cal_peak'] / 2**30:.2f} GiB", flush=True)
    cal = holder.table.result()
    run = CalibrationRun(cal, {}, holder.adapter, holder.problem, 0.0, base.get_model_object("model_sampling"))
    t0 = time.perf_counter()
    result = build_router(run, holder.adapter.time_mlp(dm), 0.2)
    row["fit_s"] = time.perf_counter() - t0
    row["fit"] = result.fit.describe()
    row["skipped"] = dict(cal.skipped)
    del patched, holder, base
    mm.unload_all_models()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def table(rows: List[Dict[str, object]], fraction: float) -> str:
    lines = [f"| model | video -> token grid | sparse settings | dense step | calibrated step (1/{round(1 / fraction)} "
             "of query tiles) | ratio (target <= 3x) | peak dense | peak calibrated | peak vs dense (target <= +10 %) "
             "| router fit (host) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['title']} | - | - | - | - | - | - | - | - | stopped: {r['error']} |")
            continue
        d, c = statistics.median(r["dense"]), statistics.median(r["cal"])
        cfg = r["config"]
        peak = (f"{r['dense_peak'] / 2**30:.2f} GiB | {r['cal_peak'] / 2**30:.2f} GiB | "
                f"{100 * (r['cal_peak'] / r['dense_peak'] - 1):+.1f} %") if r["dense_peak"] == r["dense_peak"] else "- | - | -"
        lines.append(f"| {r['title']} | {r['res']}, {r['frames']} frames -> {r['grid']} | tile "
                     f"{'x'.join(map(str, cfg.tile))}, window {'x'.join(map(str, cfg.window))}, bucket "
                     f"{'x'.join(map(str, cfg.bucket))} | {d / 1000:.2f} s | {c / 1000:.2f} s | {c / d:.2f}x | {peak} | "
                     f"{r['fit_s']:.1f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/calibration_cost.py")
    ap.add_argument("--model", default=DEFAULT_MODELS, help=f"comma-separated: {', '.join(MODELS)}")
    ap.add_argument("--res", help="480p, 720p or HxW (default: the model's own)")
    ap.add_argument("--frames", type=int, help="video frames (default: the model's own)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    ap.add_argument("--fraction", type=float, default=DEFAULT_FRACTION, help="share of query tiles measured")
    ap.add_argument("--tiny", action="store_true", help="tiny dimensions on the CPU (smoke test)")
    ap.add_argument("--md", help="also write the table to this markdown file (rewritten after each model)")
    args = ap.parse_args(argv)
    cuda = not args.tiny
    if cuda and not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --tiny for the CPU smoke run)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import_comfy(cpu=not cuda)
    registry = TINY if args.tiny else MODELS
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    if args.tiny and args.model == DEFAULT_MODELS:
        names = ["wan", "wan5b"]
    bad = [n for n in names if n not in registry]
    if bad:
        print(f"unknown model(s) {bad}; expected {list(registry)}", file=sys.stderr)
        return 2
    dev = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})"
    head = (f"{datetime.date.today()} | {dev} | torch {torch.__version__} | {'bf16' if cuda else 'fp32 (tiny CPU smoke run)'}"
            f" | random weights, real architectures | CFG 5, cond + uncond per step | step = median of {args.steps}")
    print(head, flush=True)
    rows: List[Dict[str, object]] = []
    for name in names:
        spec = registry[name]
        print(f"== {spec.title}", flush=True)
        try:
            rows.append(measure(spec, args, cuda))
        except Exception as e:  # report and go on with the next model
            import traceback

            traceback.print_exc()
            rows.append({"title": spec.title, "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"})
        text = head + "\n\n" + table(rows, args.fraction) + "\n"
        if args.md:
            with open(args.md, "w") as f:
                f.write(text)
    print("\n" + text, flush=True)
    for r in rows:
        if "fit" in r:
            print(f"* {r['title']}: {r['fit']}" + (f"; calls not measured: {r['skipped']}" if r["skipped"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
