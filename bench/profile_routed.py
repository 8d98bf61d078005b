"""Where routed attention spends its time: one self-attention call as the ComfyUI patch makes it (GPU only).

    python bench/profile_routed.py [--grid 21,45,80] [--heads 40] [--batch 2] [--tile 5,9,8]

For each head mix (all coreset, all sliding, 50/48/2) it times ``routed_attention`` with the Triton branches on
ComfyUI's Wan layout ([B, L, H*D], bf16) and lists the CUDA kernels it launched (torch.profiler), next to the
same-run baselines: dense SDPA on the whole sequence and on the pooled length.  A diagnostic, not a test.
"""
from __future__ import annotations

import argparse
from typing import List

import torch
import torch.nn.functional as F

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid
from comfyui_vorta.vorta.routing import AttentionProblem, routed_attention
from kernel_bench import bench


def triple(text: str):
    return tuple(int(v) for v in text.split(","))


def kernel_table(fn, rows: int = 8, warm: bool = True) -> str:
    """The CUDA kernels one call of ``fn`` runs, by total time (torch.profiler), after a warm-up call."""
    from torch.profiler import ProfilerActivity, profile

    if warm:
        fn()
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/profile_routed.py", description=__doc__)
    ap.add_argument("--grid", type=triple, default=(21, 45, 80))
    ap.add_argument("--tile", type=triple, default=(5, 9, 8))
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args(argv)
    from comfyui_vorta.vorta.kernels.launch import TRITON_BRANCHES

    dev = torch.device("cuda")
    g = TokenGrid(*args.grid)
    H, D, B, L = args.heads, 128, args.batch, g.numel
    p = AttentionProblem(g, VortaConfig(tile=args.tile))
    q, k, v = (torch.randn(B, L, H * D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    n_full = max(1, round(0.02 * H))
    n_core = round(0.48 * H)
    mixes = {
        "coreset": torch.ones(H, dtype=torch.long),
        "sliding": torch.full((H,), 2, dtype=torch.long),
        "mix 50/48/2": torch.tensor([0] * n_full + [1] * n_core + [2] * (H - n_full - n_core)),
    }
    pooled = BucketLayout(g, p.config.bucket, p.config.ratio).pooled_length
    qh, kh, vh = (t.view(B, L, H, D).transpose(1, 2) for t in (q, k, v))
    qp, kp, vp = (torch.randn(B, H, pooled, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    lines: List[str] = []
    base = {
        "SDPA dense, ComfyUI layout (transposed views)": lambda: F.scaled_dot_product_attention(qh, kh, vh),
        "SDPA on the pooled length (contiguous)": lambda: F.scaled_dot_product_attention(qp, kp, vp),
    }
    for name, fn in base.items():
        with torch.inference_mode():
            ms_inf = bench(fn, 100)
        lines.append(f"| {name} | {bench(fn, 100):.1f} | {ms_inf:.1f} |")
    for name, dec in mixes.items():
        groups = [torch.nonzero(dec == b).flatten().to(dev) for b in range(3)]

        def call(groups=groups):
            return routed_attention(q, k, v, H, groups, p, layout="wan", branches=TRITON_BRANCHES)

        ms = bench(call, 100)
        with torch.inference_mode():  # ComfyUI samples under inference mode
            ms_inf = bench(call, 100)
        lines.append(f"| routed {name} | {ms:.1f} | {ms_inf:.1f} |")
        if not args.no_profile:
            print(f"\n== {name}: {ms:.1f} ms\n{kernel_table(call)}", flush=True)
            with torch.inference_mode():
                print(f"\n== {name}, inference mode\n{kernel_table(call)}", flush=True)
    print(f"\ngrid {g.shape} tile {args.tile}, B={B}, H={H}, pooled {pooled} of {L}\n")
    print("| call | ms | ms (inference mode) |\n|---|---|---|\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
