"""Route a synthetic video-shaped attention problem through all three branches and report the error
against full attention and the attention FLOPs saved.

Timings are those of the PyTorch reference branches (the oracle the Triton kernels are tested against), each
configuration timed once by the same clock; they are not kernel timings (README, "Kernels and speed").

    python -m comfyui_vorta.vorta.demo            # CPU, a few seconds
    python -m comfyui_vorta.vorta.demo --grid 21 30 52 --heads 12 --device cuda
"""
from __future__ import annotations

import argparse
import time

import torch

from .config import BRANCHES, PRESETS, VortaConfig
from .geometry import TokenGrid
from .reference import full_attention
from .router import OFFICIAL_TAU_SPARSE, branch_shares, make_random_routers, official_layer_names, router_input
from .routing import AttentionProblem, attention_flops, head_groups, routed_attention


def smooth_video_qkv(grid: TokenGrid, batch: int, heads: int, head_dim: int, generator: torch.Generator, device, dtype):
    """Q/K/V that vary smoothly over the grid plus noise, like real video features; Q and K share one field, so
    a query attends most to nearby tokens (local attention, as in video DiTs).  Never zeros."""
    F_, H_, W_ = grid.shape
    coarse = (max(2, F_ // 3), max(2, H_ // 4), max(2, W_ // 4))

    def field(scale):
        base = torch.randn(batch * heads, head_dim, *coarse, generator=generator)
        smooth = torch.nn.functional.interpolate(base, size=grid.shape, mode="trilinear", align_corners=False)
        return scale * smooth / smooth.std()

    def tokens(x):
        x = x + 0.3 * torch.randn(x.shape, generator=generator)
        x = x.reshape(batch, heads, head_dim, -1).permute(0, 3, 1, 2).reshape(batch, grid.numel, heads * head_dim)
        return x.to(device=device, dtype=dtype)

    shared = field(1.2)
    return tokens(shared), tokens(shared), tokens(field(1.0))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m comfyui_vorta.vorta.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, nargs=3, default=(9, 17, 26), metavar=("F", "H", "W"),
                    help="latent token grid (default 9 17 26: ragged for every tile and bucket used)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS),
                    help="use a model preset's tile/window/bucket (default: tile 2x4x4, a small grid's analogue "
                         "of the 14B setting's 3x3x3-tile window over about a third of each axis)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    grid = TokenGrid(*args.grid)
    config: VortaConfig = PRESETS[args.preset].config if args.preset else VortaConfig(tile=(2, 4, 4))
    dev, dtype = torch.device(args.device), (torch.bfloat16 if args.device != "cpu" else torch.float32)
    g = torch.Generator().manual_seed(args.seed)
    q, k, v = smooth_video_qkv(grid, args.batch, args.heads, 128, g, dev, dtype)
    problem = AttentionProblem(grid, config)

    def split(x):
        return x.view(args.batch, grid.numel, args.heads, 128).transpose(1, 2)

    full = full_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(args.batch, grid.numel, -1)
    print(f"grid {grid.shape} = {grid.numel} tokens, {args.heads} heads x 128, batch {args.batch}, {dtype}; "
          f"tile {config.tile} window {config.window} bucket {config.bucket} ratio {config.ratio}")
    print(f"{'heads routed to':<34}{'rel. error vs full':>20}{'attn FLOPs vs dense':>22}{'reference time (s)':>20}")
    for b, name in enumerate(BRANCHES):
        t0 = time.perf_counter()
        out = routed_attention(q, k, v, args.heads, torch.full((args.heads,), b), problem)
        dt = time.perf_counter() - t0
        fl = attention_flops(problem, args.batch, [args.heads if i == b else 0 for i in range(3)])
        print(f"{'all: ' + name:<34}{rel_err(out, full):>20.4f}{fl[name] / fl['dense']:>22.3f}{dt:>20.2f}")

    # A learned-router stand-in: random routers on a mid-schedule timestep, through the real routing rule.
    routers = make_random_routers("wan", official_layer_names("wan", 1), dim=256, heads=args.heads, seed=args.seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.SiLU(), torch.nn.Linear(256, 256))
    decisions = routers.decide(router_input("wan", mlp, torch.tensor([500.0])), OFFICIAL_TAU_SPARSE)[0]
    groups = head_groups(decisions)
    t0 = time.perf_counter()
    out = routed_attention(q, k, v, args.heads, groups, problem)
    dt = time.perf_counter() - t0
    fl = attention_flops(problem, args.batch, [g_.numel() for g_ in groups])
    shares = branch_shares(decisions)
    mix = " ".join(f"{s:.0%} {n[:4]}" for s, n in zip(shares, BRANCHES))
    saved = 1 - (fl["full"] + fl["coreset"] + fl["sliding"]) / fl["dense"]
    print(f"{'router: ' + mix:<34}{rel_err(out, full):>20.4f}{1 - saved:>22.3f}{dt:>20.2f}")
    print(f"The routed mix saves {saved:.0%} of the attention FLOPs. Times: the PyTorch reference branches on "
          f"{dev.type} (the oracle), not the Triton kernels; for kernel timings see the README, 'Kernels and speed'.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
