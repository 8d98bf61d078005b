"""The 8-bit path of the sparse kernels against their bf16 path, same shapes, same run (GPU only).

    python bench/quant_bench.py [--shapes 0,5b,Hunyuan] [--sweep "BM,BN,warps,stages;..."] [--md out.md]

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/kbench

from kbench import shapes as shape_list  # noqa: E402
from kbench.branches import problem  # noqa: E402
from kbench.measure import bench, dense_flops, sliding_flops  # noqa: E402
from kbench.shapes import HEAD_DIM, Shape  # noqa: E402

DEFAULT_SHAPES = "Wan2.1-14B 720p,Wan2.2-5B,Hunyuan 720p +text"


def video_like(s: Shape, gen, bias: float = 0.0) -> torch.Tensor:
    """[B, S, H, D]: a sum of low-frequency space-time modes (random D-vectors) + 10 % noise (+ a channel bias);
    the text rows (first or last, as the shape says) are plain noise."""
    B, H, D = s.batch, s.heads, HEAD_DIM
    dev = gen.device
    axes = [torch.linspace(0, 1, n, device=dev) for n in s.grid]
    x = torch.zeros(B, *s.grid, H, D, device=dev)
    for _ in range(6):
        freq = torch.rand(3, generator=gen, device=dev) * 3
        phase = torch.rand(3, generator=gen, device=dev) * 6.28
        mode = (torch.cos(2 * math.pi * freq[0] * axes[0] + phase[0])[:, None, None]
                * torch.cos(2 * math.pi * freq[1] * axes[1] + phase[1])[None, :, None]
                * torch.cos(2 * math.pi * freq[2] * axes[2] + phase[2])[None, None, :])
        x += mode[None, :, :, :, None, None] * torch.randn(B, 1, 1, 1, H, D, generator=gen, device=dev)
    x = x.reshape(B, s.video, H, D) / 6 ** 0.5 * 2.0
    text = torch.randn(B, s.text, H, D, generator=gen, device=dev)
    x = torch.cat([text, x] if s.text_first else [x, text], 1)
    x += 0.3 * torch.randn(x.shape, generator=gen, device=dev)
    x += bias * torch.randn(1, 1, H, D, generator=gen, device=dev)
    return x.to(torch.bfloat16)


def inputs(kind: str, s: Shape, seed: int):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    if kind == "gauss":
        return [torch.randn(s.batch, s.seq, s.heads, HEAD_DIM, generator=gen, device="cuda", dtype=torch.bfloat16)
                for _ in range(3)]
    return [video_like(s, gen, bias=b) for b in (0.0, 4.0, 0.0)]


def head_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per (batch, head) of [B, S, H, D] tensors."""
    a, b = a.float().transpose(1, 2).flatten(2), b.float().transpose(1, 2).flatten(2)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def run(s: Shape, kind: str, rows: List[Dict]) -> None:
    from comfyui_vorta.vorta.config import VortaConfig
    from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid
    from comfyui_vorta.vorta.kernels.launch import triton_coreset, triton_sliding

    cfg = VortaConfig(tile=s.tile)
    q, k, v = inputs(kind, s, seed=7)
    heads = torch.arange(s.heads, device="cuda")
    text_rows = slice(0, s.text) if s.text_first else slice(s.video, s.seq)
    live = torch.ones(s.seq, dtype=torch.bool, device="cuda")
    live[text_rows] = torch.arange(s.text, device="cuda") < s.valid_text  # padded text rows are 0 by definition
    pooled = BucketLayout(TokenGrid(*s.grid), cfg.bucket, cfg.ratio).pooled_length + s.valid_text
    for branch, fn, flops in (("sliding", triton_sliding, sliding_flops(s)),
                              ("coreset", triton_coreset, dense_flops(s, pooled))):
        p = problem(s, "cuda", "key" if s.family == "hunyuan" else "query")
        outs = {}
        for quant in (False, True):
            out = torch.full((s.batch, s.seq, s.heads, HEAD_DIM), float("nan"), device="cuda", dtype=torch.bfloat16)
            fn(q, k, v, heads, out, p, quant=quant)
            torch.cuda.synchronize()
            outs[quant] = out
            outs[(quant, "ms")] = bench(lambda: fn(q, k, v, heads, out, p, quant=quant), rep_ms=150)
        a, b = outs[True][:, live], outs[False][:, live]
        cos = head_cosine(a, b)
        rows.append(dict(shape=s.name, kind=kind, branch=branch, bf16=outs[(False, "ms")], q8=outs[(True, "ms")],
                         tflops8=flops / outs[(True, "ms")] / 1e9, cos_min=float(cos.min()),
                         cos_mean=float(cos.mean()), rel=float((a.float() - b.float()).norm() / b.float().norm()),
                         finite=bool(torch.isfinite(a).all())))
        r = rows[-1]
        print(f"  {branch} {kind}: bf16 {r['bf16']:.2f} ms, 8-bit {r['q8']:.2f} ms ({r['bf16'] / r['q8']:.2f}x), "
              f"cos min {r['cos_min']:.5f}, rel {r['rel']:.2e}", flush=True)
        del outs
    torch.cuda.empty_cache()


def sweep(s: Shape, configs: List[str]) -> None:
    from comfyui_vorta.vorta.kernels.launch import triton_sliding

    q, k, v = inputs("gauss", s, seed=3)
    out = torch.empty_like(q)
    heads = torch.arange(s.heads, device="cuda")
    p = problem(s, "cuda")
    for c in configs:
        os.environ["VORTA_STA_CONFIG"] = c
        for quant in (False, True):
            what = f"sweep | {s.name} | {c} | {'8-bit' if quant else 'bf16'}"
            try:
                ms = bench(lambda: triton_sliding(q, k, v, heads, out, p, quant=quant), rep_ms=150)
                print(f"{what} | {ms:.2f} ms | {sliding_flops(s) / ms / 1e9:.0f} TFLOP/s", flush=True)
            except Exception as e:  # report, do not hide
                print(f"{what} | failed: {type(e).__name__}: {str(e)[:160]}", flush=True)
    os.environ.pop("VORTA_STA_CONFIG", None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/quant_bench.py")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="indices or name substrings of bench/kbench/shapes.py "
                    "(python bench/kernel_bench.py --list)")
    ap.add_argument("--kinds", default="video,gauss")
    ap.add_argument("--sweep", help="sliding configs to time on each shape, both paths: 'BM,BN,warps,stages[,tma];...'")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    shapes = shape_list.select(args.shapes)
    if args.sweep:
        for s in shapes:
            sweep(s, args.sweep.split(";"))
        return 0
    rows: List[Dict] = []
    for s in shapes:
        for kind in args.kinds.split(","):
            print(f"... {s.name} ({kind})", flush=True)
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
