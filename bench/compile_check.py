"""torch.compile (inductor) through ComfyUI's own TorchCompileModel wrapper, placed before and after Apply VORTA,
on a real Wan architecture with random bf16 weights on the GPU: same output as eager (bf16 tolerance), no
recompiles once the first steps ran although the routing decisions change every step, and the step time.

    COMFYUI_PATH=... PYTHONPATH=<folder where comfyui_vorta resolves to this repo> python bench/compile_check.py
Prints one table (markdown) at the end.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="480x832")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)

    import os

    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    import comfy.model_management  # noqa: F401
    import comfy.samplers
    import nodes
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.utils import counters

    from e2e import MODELS, build_model, conditioning
    from comfyui_vorta.vorta.comfy.install import apply_vorta, find_patch
    from comfyui_vorta.vorta.comfy.options import build_settings
    from comfyui_vorta.vorta.comfy.plan import RouterBundle
    from comfyui_vorta.vorta.config import PRESETS
    from comfyui_vorta.vorta.router import make_random_routers, official_layer_names

    spec = MODELS["wan1.3b"]
    base, cls = build_model(spec, torch.bfloat16)
    h, w = (int(x) for x in args.res.split("x"))
    latent = {"samples": torch.randn(1, 16, (args.frames - 1) // 4 + 1, h // 8, w // 8, generator=torch.Generator().manual_seed(0))}
    pos, neg = conditioning(spec)
    dm = base.get_model_object("diffusion_model")
    routers = make_random_routers("wan", official_layer_names("wan", len(dm.blocks)), int(dm.dim), int(dm.num_heads), seed=7)
    bundle = RouterBundle(routers, PRESETS["wan2.1-1.3b-480p"].config, "random")
    settings = build_settings(mode="router", preset="wan2.1-1.3b-480p")

    def sample(model, scheduler="simple"):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = nodes.KSampler().sample(model, 0, args.steps, 5.0, "euler", scheduler, pos, neg, latent)[0]["samples"]
        torch.cuda.synchronize()
        return out, (time.perf_counter() - t0) / args.steps

    rows = []
    # the yardstick: how far inductor moves ComfyUI's own model (no VORTA) from eager over the same steps
    dense_eager, _ = sample(base)
    torch._dynamo.reset()
    counters.clear()
    c = base.clone()
    set_torch_compile_wrapper(c, backend="inductor")
    dense_compiled, t_dense = sample(c)
    dense_compiled, t_dense = sample(c)
    err = float((dense_compiled.float() - dense_eager.float()).abs().max() / dense_eager.float().abs().max())
    rows.append(("no VORTA: compiled vs eager (yardstick)", t_dense, err, int(counters["stats"]["unique_graphs"]), "-",
                 ""))
    eager = apply_vorta(base, settings, bundle)
    sample(eager)  # warm-up: Triton kernels compile
    ref, t_eager = sample(eager)
    rows.append(("eager (Apply VORTA)", t_eager, 0.0, "-", "-", find_patch(eager).last_summary))
    for order in ("compile after Apply VORTA", "compile before Apply VORTA"):
        torch._dynamo.reset()
        counters.clear()
        if order.endswith("after Apply VORTA"):
            m = apply_vorta(base, settings, bundle).clone()
            set_torch_compile_wrapper(m, backend="inductor")
        else:
            c = base.clone()
            set_torch_compile_wrapper(c, backend="inductor")
            m = apply_vorta(c, settings, bundle)
        first, t_first = sample(m)
        _, t_first = sample(m)  # warm: compiled
        graphs = int(counters["stats"]["unique_graphs"])
        out, _ = sample(m, "beta")  # another schedule: new timesteps, new routing decisions, same shapes
        again = int(counters["stats"]["unique_graphs"]) - graphs
        err = float((first.float() - ref.float()).abs().max() / ref.float().abs().max())
        rows.append((order, t_first, err, graphs, again, find_patch(m).last_summary))
    print(f"\nWan2.1-1.3B architecture (random bf16 weights, {cls}), latent {tuple(latent['samples'].shape)}, "
          f"{args.steps} steps, CFG 5, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| run | s/step | max rel. diff vs eager | graphs compiled | new graphs on a 2nd schedule | run summary |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.2e} | {r[3]} | {r[4]} | {r[5]} |")
    bad = [r for r in rows[2:] if r[4] != 0]  # recompiles on a new schedule
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
