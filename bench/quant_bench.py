"""The 8-bit path of the sparse kernels against their bf16 path, same shapes, same run (GPU only).

    python bench/quant_bench.py [--shapes i,j] [--sweep "BM,BN,warps,stages;..."] [--md out.md]

Per shape and input kind it reports the speed of both paths (median of CUDA-event timed runs) and the 8-bit
output's error against the bf16 kernel: per-head cosine similarity (min and mean over heads; SageAttention's
accuracy bar is 0.999) and relative L2.  Input kinds: ``gauss`` (i.i.d. normal: the hardest case for FP8 softmax
weights, nearly uniform attention) and ``video`` (smooth space-time fields with a shared key bias and a little
noise, as DiT activations look: attention concentrates on nearby, similar tokens)."""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
from typing import Dict, List

import torch

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid, sliding_density
from comfyui_vorta.vorta.routing import AttentionProblem

SHAPES = [  # name, grid, heads, tile, text, text_valid, batch
    ("Wan2.1-14B 720p 81f", (21, 45, 80), 40, (5, 9, 8), 0, None, 1),
    ("Hunyuan 720p +text", (30, 45, 80), 24, (6, 9, 8), 256, 200, 1),
    ("Wan2.2-5B 720p 121f", (31, 44, 80), 24, (4, 6, 8), 0, None, 1),
    ("Wan-14B 480p 81f", (21, 30, 52), 40, (4, 6, 8), 0, None, 1),
    ("Wan-14B 720p CFG batch 2", (21, 45, 80), 40, (5, 9, 8), 0, None, 2),
]


def video_like(B: int, grid, H: int, D: int, text: int, gen, bias: float = 0.0) -> torch.Tensor:
    """[B, S, H, D]: a sum of low-frequency space-time modes (random D-vectors) + 10 % noise (+ a channel bias)."""
    f, h, w = grid
    dev = gen.device
    axes = [torch.linspace(0, 1, n, device=dev) for n in grid]
    x = torch.zeros(B, f, h, w, H, D, device=dev)
    for _ in range(6):
        freq = torch.rand(3, generator=gen, device=dev) * 3
        phase = torch.rand(3, generator=gen, device=dev) * 6.28
        mode = (torch.cos(2 * math.pi * freq[0] * axes[0] + phase[0])[:, None, None]
                * torch.cos(2 * math.pi * freq[1] * axes[1] + phase[1])[None, :, None]
                * torch.cos(2 * math.pi * freq[2] * axes[2] + phase[2])[None, None, :])
        x += mode[None, :, :, :, None, None] * torch.randn(B, 1, 1, 1, H, D, generator=gen, device=dev)
    x = x.reshape(B, f * h * w, H, D) / 6 ** 0.5 * 2.0
    x = torch.cat([x, torch.randn(B, text, H, D, generator=gen, device=dev)], 1)
    x += 0.3 * torch.randn(x.shape, generator=gen, device=dev)
    x += bias * torch.randn(1, 1, H, D, generator=gen, device=dev)
    return x.to(torch.bfloat16)


def inputs(kind: str, B, grid, H, D, text, seed: int):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    L = math.prod(grid)
    if kind == "gauss":
        return [torch.randn(B, L + text, H, D, generator=gen, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    return [video_like(B, grid, H, D, text, gen, bias=b) for b in (0.0, 4.0, 0.0)]


def head_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per (batch, head) of [B, S, H, D] tensors."""
    a, b = a.float().transpose(1, 2).flatten(2), b.float().transpose(1, 2).flatten(2)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))


def run(shape, kind: str, rows: List[Dict]) -> None:
    from comfyui_vorta.vorta.kernels.launch import triton_coreset, triton_sliding

    name, grid, H, tile, T, tv_n, B = shape
    D = 128
    g = TokenGrid(*grid)
    L = g.numel
    cfg = VortaConfig(tile=tile)
    tv = torch.tensor([tv_n] * B) if tv_n is not None else None
    q, k, v = inputs(kind, B, grid, H, D, T, seed=7)
    heads = torch.arange(H, device="cuda")
    live = slice(0, L + (tv_n if tv_n is not None else T))
    for branch, fn, pairs in (
            ("sliding", triton_sliding, sliding_density(g, tile, (3, 3, 3)) * L * L + L * (tv_n or T)),
            ("coreset", triton_coreset, (BucketLayout(g, cfg.bucket, cfg.ratio).pooled_length + (tv_n or T)) ** 2)):
        kv_from = "key" if "Hunyuan" in name else "query"
        p = AttentionProblem(g, cfg, kv_from=kv_from, text_len=T, text_valid=tv)
        outs = {}
        for quant in (False, True):
            out = torch.full((B, L + T, H, D), float("nan"), device="cuda", dtype=torch.bfloat16)
            fn(q, k, v, heads, out, p, quant=quant)
            torch.cuda.synchronize()
            outs[quant] = out
            outs[(quant, "ms")] = bench(lambda: fn(q, k, v, heads, out, p, quant=quant))
        a, b = outs[True][:, live], outs[False][:, live]
        cos = head_cosine(a, b)
        flops = 4 * D * H * B * pairs
        rows.append(dict(shape=name, kind=kind, branch=branch, bf16=outs[(False, "ms")], q8=outs[(True, "ms")],
                         tflops8=flops / outs[(True, "ms")] / 1e9, tflops16=flops / outs[(False, "ms")] / 1e9,
                         cos_min=float(cos.min()), cos_mean=float(cos.mean()),
                         rel=float((a.float() - b.float()).norm() / b.float().norm()),
                         finite=bool(torch.isfinite(a).all())))
        r = rows[-1]
        print(f"  {branch} {kind}: bf16 {r['bf16']:.2f} ms, 8-bit {r['q8']:.2f} ms ({r['bf16'] / r['q8']:.2f}x), "
              f"cos min {r['cos_min']:.5f}, rel {r['rel']:.2e}", flush=True)
        del outs
    torch.cuda.empty_cache()


def sweep(shape, configs: List[str]) -> None:
    from comfyui_vorta.vorta.kernels.launch import triton_sliding

    name, grid, H, tile, T, tv_n, B = shape
    g = TokenGrid(*grid)
    q, k, v = inputs("gauss", B, grid, H, 128, T, seed=3)
    out = torch.empty_like(q)
    heads = torch.arange(H, device="cuda")
    p = AttentionProblem(g, VortaConfig(tile=tile), text_len=T)
    flops = 4 * 128 * H * B * (sliding_density(g, tile, (3, 3, 3)) * g.numel ** 2 + g.numel * T)
    for c in configs:
        os.environ["VORTA_STA_CONFIG"] = c
        for quant in (False, True):
            try:
                ms = bench(lambda: triton_sliding(q, k, v, heads, out, p, quant=quant))
                print(f"sweep | {name} | {c} | {'8-bit' if quant else 'bf16'} | {ms:.2f} ms | {flops / ms / 1e9:.0f} TFLOP/s",
                      flush=True)
            except Exception as e:  # report, do not hide
                print(f"sweep | {name} | {c} | {'8-bit' if quant else 'bf16'} | failed: {type(e).__name__}: {str(e)[:160]}",
                      flush=True)
    os.environ.pop("VORTA_STA_CONFIG", None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/quant_bench.py")
    ap.add_argument("--shapes", help="comma-separated indices into the shape list")
    ap.add_argument("--kinds", default="video,gauss")
    ap.add_argument("--sweep", help="sliding configs to time on each shape, both paths: 'BM,BN,warps,stages[,tma];...'")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")] if args.shapes else SHAPES
    if args.sweep:
        for s in shapes:
            sweep(s, args.sweep.split(";"))
        return 0
    rows: List[Dict] = []
    for s in shapes:
        for kind in args.kinds.split(","):
            print(f"... {s[0]} ({kind})", flush=True)
            run(s, kind, rows)
    lines = [f"{datetime.date.today()} | {torch.cuda.get_device_name()} | torch {torch.__version__} | triton "
             f"{triton.__version__} | python {platform.python_version()} | `python bench/quant_bench.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| shape | input | branch | bf16 ms | 8-bit ms | speed-up | 8-bit exec TFLOP/s | head cos min | mean | rel L2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['kind']} | {r['branch']} | {r['bf16']:.2f} | {r['q8']:.2f} | "
                     f"{r['bf16'] / r['q8']:.2f}x | {r['tflops8']:.0f} | {r['cos_min']:.5f} | {r['cos_mean']:.5f} | "
                     f"{r['rel']:.2e}{'' if r['finite'] else ' NONFINITE'} |")
    text = "\n".join(lines)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
