"""Do calibrated decisions carry over to schedules not used in calibration?  (CPU, real ComfyUI, small model.)

    COMFYUI_PATH=... python bench/calibration_transfer.py [--md out.md]

A Wan model with ComfyUI's own classes and random weights (small: the CPU has to sample it ~200 times) is
calibrated once at 20 steps (euler, ``simple``).  Every other schedule -- 30 and 50 steps, another sampler and
scheduler (``dpmpp_2m`` + ``beta``, ``uni_pc`` + ``sgm_uniform``) -- is then calibrated directly as the ground
truth, and the decisions the 20-step calibration gives at that schedule's timesteps are compared with it, for
three ways of carrying them over:

* ``nearest``: the decisions of the nearest calibrated timestep (a timestep-keyed table, no interpolation);
* ``interp``: errors interpolated linearly in t, then the rule (what the fit targets);
* ``router``: the fitted router itself (official form, read through ``RouterSet.decide`` as sampling does).

A second 20-step calibration with another seed and prompt is the noise floor: how much calibration varies on the
very schedule it was made on.  Columns: agreement with the direct calibration's decisions; the mean error of the
chosen branches measured by the direct calibration (what the run really gets), against the direct calibration's own;
the share of chosen sparse heads whose real error exceeds the budget by more than 20 %; attention FLOPs saved.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Dict

import torch

from comfyui_vorta.vorta.calibration_fit import fit_routers, grid_targets, router_features
from comfyui_vorta.vorta.calibration_rule import branch_costs, chosen_error, decide, errors_at, nearest_at
from comfyui_vorta.vorta.config import FULL, VortaConfig
from comfyui_vorta.vorta.router import official_layer_names
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


def compare(truth, decisions, costs, budget) -> Dict[str, float]:
    e = truth.calibration.errors
    real = chosen_error(e, decisions)
    sparse = decisions != FULL
    over = (real > budget * 1.2) & sparse
    return {"agree": float((decisions == decide(e, costs, budget)).double().mean()),
            "error": float(real.nanmean()), "over": float(over.sum()) / max(1, int(sparse.sum())),
            "saved": 1.0 - float(costs[decisions].mean())}


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
    minimum = torch.minimum(cal.errors[..., 1], cal.errors[..., 2]).flatten()
    budgets = [float(minimum.quantile(q)) for q in (0.25, 0.5, 0.75)]
    mlp = base.adapter.time_mlp(model.get_model_object("diffusion_model"))
    names = official_layer_names("wan", base.adapter.num_layers)
    routers = {}
    for b in budgets:
        grid, targets, anchors = grid_targets("wan", cal.t, cal.errors, costs, b)
        routers[b] = fit_routers("wan", names, router_features("wan", mlp, grid), targets, anchors)[0]
    truths = [("euler/simple 20, other seed+prompt (noise floor)", run(model, "euler", "simple", 20, 7, args.fraction))]
    truths += [(f"{s}/{sch} {n}", run(model, s, sch, n, 0, args.fraction)) for s, sch, n in SCHEDULES]
    rows = []
    for name, truth in truths:
        t = truth.calibration.t
        for b in budgets:
            own = compare(truth, decide(truth.calibration.errors, costs, b), costs, b)
            ways = {"nearest": nearest_at(cal.t, decide(cal.errors, costs, b), t),
                    "interp": decide(errors_at(cal.t, cal.errors, t), costs, b),
                    "router": torch.stack([routers[b].decide(router_input("wan", mlp, torch.tensor([float(x)])))
                                           for x in t])}
            cells = {k: compare(truth, d, costs, b) for k, d in ways.items()}
            rows.append((name, b, own, cells))
    lines = [f"{datetime.date.today()} | CPU | torch {torch.__version__} | {SPEC.title}: {SPEC.unet['num_layers']} "
             f"layers x {SPEC.unet['num_heads']} heads, dim {SPEC.unet['dim']}, grid "
             f"{'x'.join(map(str, base.problem.grid.shape))}, tile {CONFIG.tile} window {CONFIG.window} bucket "
             f"{CONFIG.bucket}, CFG 5, calibrated at euler/simple 20 steps; knobs = quartiles of the 20-step minimum "
             f"sparse error; {time.perf_counter() - start:.0f} s", "",
             "| applied to | max_error | agreement nearest / interp / router | mean real error: direct / nearest / "
             "interp / router | sparse heads over budget x1.2: nearest / interp / router | FLOPs saved: direct / "
             "router |", "|---|---|---|---|---|---|"]
    for name, b, own, c in rows:
        lines.append(f"| {name} | {b:.3f} | {c['nearest']['agree']:.1%} / {c['interp']['agree']:.1%} / "
                     f"{c['router']['agree']:.1%} | {own['error']:.3f} / {c['nearest']['error']:.3f} / "
                     f"{c['interp']['error']:.3f} / {c['router']['error']:.3f} | {c['nearest']['over']:.1%} / "
                     f"{c['interp']['over']:.1%} / {c['router']['over']:.1%} | {own['saved']:.1%} / "
                     f"{c['router']['saved']:.1%} |")
    text = "\n".join(lines)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
