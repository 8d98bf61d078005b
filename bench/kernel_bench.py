"""Kernel benchmark: sliding tile and coreset branches against same-run baselines (GPU only).

    python bench/kernel_bench.py [--only sliding|coreset] [--quick] [--md results.md]

Per shape (bf16, B=1, head dim 128) it checks the kernel against the PyTorch reference first (a few heads at
full size), then times (median of CUDA-event timed runs after warm-up, ``triton.testing.do_bench``):
* sliding: our kernel; FlexAttention with the equivalent block mask on the tiled layout, permutes included
  (what the official code runs); PyTorch SDPA dense (cuDNN by default); the PyTorch reference;
* coreset: our select+pool / attention / unpool; SDPA dense on the pooled length (the ideal); the reference
  (torch gather/scatter + SDPA, as the official code does); SDPA dense on the whole sequence.
Executed TFLOP/s count only computed (query, key) pairs: 4·D per pair.
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import BucketLayout, TileLayout, TokenGrid, sliding_density
from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.routing import AttentionProblem


@dataclass
class Shape:
    name: str
    grid: Tuple[int, int, int]
    heads: int
    tile: Tuple[int, int, int]
    text: int = 0
    text_valid: Optional[int] = None


SHAPES = [
    Shape("Wan2.1-14B 720p", (20, 45, 80), 40, (5, 9, 8)),
    Shape("Hunyuan 720p", (30, 45, 80), 24, (6, 9, 8)),
    Shape("Hunyuan 720p +text", (30, 45, 80), 24, (6, 9, 8), text=80, text_valid=72),
    Shape("Wan2.1-1.3B 480p", (21, 30, 52), 12, (4, 6, 8)),
    Shape("Wan-14B 81f ragged", (21, 45, 80), 40, (5, 9, 8)),
    Shape("aligned 18x48x80 t6x8x8", (18, 48, 80), 40, (6, 8, 8)),
]


def bench(fn: Callable, rep_ms: int = 200) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=50, rep=rep_ms, return_mode="median"))


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def sliding_pairs(s: Shape) -> float:
    L = math.prod(s.grid)
    T = s.text_valid if s.text_valid is not None else s.text
    return sliding_density(TokenGrid(*s.grid), s.tile, (3, 3, 3)) * L * L + L * T  # video queries only


def flex_sliding(s: Shape, q, k, v):
    """FlexAttention on the padded tiled layout (video + text), permutes included, like the official code."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    g = TokenGrid(*s.grid)
    layout = TileLayout(g, s.tile)
    nf, nh, nw = layout.tile_grid
    P = layout.tile_tokens
    idx = layout.tile_token_index().flatten().to(q.device)  # padded tiled slot -> raster or -1
    n_slots = idx.numel()
    L = g.numel
    T = s.text
    tv = s.text_valid if s.text_valid is not None else T
    slot_valid = torch.cat([idx >= 0, torch.arange(T, device=q.device) < tv])
    gather = torch.cat([torch.where(idx >= 0, idx, 0), torch.arange(L, L + T, device=q.device)])

    def tile_coords(i):
        t = i // P
        return t // (nh * nw), (t // nw) % nh, t % nw

    def mask_mod(b, h, qi, ki):
        q_text = qi >= n_slots
        k_text = ki >= n_slots
        qa, qb, qc = tile_coords(qi)
        ka, kb, kc = tile_coords(ki)
        ca = torch.clamp(qa, 1, nf - 2)
        cb = torch.clamp(qb, 1, nh - 2)
        cc = torch.clamp(qc, 1, nw - 2)
        win = ((ca - ka).abs() <= 1) & ((cb - kb).abs() <= 1) & ((cc - kc).abs() <= 1)
        ok = slot_valid[ki] & slot_valid[qi]
        return ok & (win & ~q_text & ~k_text | k_text | q_text)

    S = n_slots + T
    bm = create_block_mask(mask_mod, B=None, H=None, Q_LEN=S, KV_LEN=S, device=q.device, _compile=True)
    flex = torch.compile(flex_attention, dynamic=False)

    def run():
        qt, kt, vt = (x[:, :, gather] for x in (q, k, v))
        o = flex(qt, kt, vt, block_mask=bm)
        out = torch.empty_like(q)
        out[:, :, gather[: n_slots][idx >= 0]] = o[:, :, :n_slots][:, :, idx >= 0]
        if T:
            out[:, :, L:] = o[:, :, n_slots:]
        return out

    return run


def run_sliding(s: Shape, dev, quick: bool, rows: List[Dict]):
    from comfyui_vorta.vorta.kernels.launch import triton_sliding

    g = TokenGrid(*s.grid)
    L, T, H, D = g.numel, s.text, s.heads, 128
    cfg = VortaConfig(tile=s.tile)
    tv = torch.tensor([s.text_valid]) if s.text_valid is not None else None
    p = AttentionProblem(g, cfg, kv_from="key", text_len=T, text_valid=tv)
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, H, L + T, D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3))
    qs, ks, vs = (x.transpose(1, 2) for x in (q, k, v))  # Hunyuan-style strided view, no copy
    heads = torch.arange(H, device=dev)
    out = torch.full((1, L + T, H, D), float("nan"), device=dev, dtype=torch.bfloat16)
    triton_sliding(qs, ks, vs, heads, out, p)
    torch.cuda.synchronize()
    chk = [0, H - 1]
    ref = reference.sliding_tile_attention(q[:, chk], k[:, chk], v[:, chk], g, s.tile, (3, 3, 3), T, tv)
    err = rel(out[:, :, chk].transpose(1, 2), ref)
    finite = bool(torch.isfinite(out[:, :L]).all())

    def run_ours():
        triton_sliding(qs, ks, vs, heads, out, p)

    ours_runs = [bench(run_ours)]  # timed three times, between the baselines: the spread shows the noise
    dense = bench(lambda: F.scaled_dot_product_attention(q, k, v))
    ours_runs.append(bench(run_ours))
    try:
        flex_fn = flex_sliding(s, q, k, v)
        fo = flex_fn()
        flex_err = rel(fo[:, chk], ref)
        flex = bench(flex_fn)
    except Exception as e:  # report, do not hide
        print(f"  flex failed on {s.name}: {type(e).__name__}: {e}", file=sys.stderr)
        flex, flex_err = float("nan"), float("nan")
    ours_runs.append(bench(run_ours))
    ours = sorted(ours_runs)[1]
    ref_t = float("nan")
    if not quick and L <= 80000:
        ref_t = bench(lambda: reference.sliding_tile_attention(q, k, v, g, s.tile, (3, 3, 3), T, tv), rep_ms=50)
    flops = 4 * D * H * sliding_pairs(s)
    rows.append(dict(branch="sliding", shape=s.name, tile="x".join(map(str, s.tile)), heads=H, ms=ours,
                     tflops=flops / ours / 1e9, dense=dense, flex=flex, ref=ref_t, err=err, flex_err=flex_err,
                     ok=finite, spread=(min(ours_runs), max(ours_runs))))


def run_coreset(s: Shape, dev, quick: bool, rows: List[Dict]):
    from comfyui_vorta.vorta.kernels.launch import triton_coreset

    g = TokenGrid(*s.grid)
    L, T, H, D = g.numel, s.text, s.heads, 128
    cfg = VortaConfig(tile=s.tile)
    tv = torch.tensor([s.text_valid]) if s.text_valid is not None else None
    kv_from = "key" if "Hunyuan" in s.name else "query"
    p = AttentionProblem(g, cfg, kv_from=kv_from, text_len=T, text_valid=tv)
    gen = torch.Generator(device=dev).manual_seed(1)
    x = [torch.randn(1, L + T, H * D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3)]
    qs, ks, vs = (t.view(1, L + T, H, D) for t in x)  # Wan-style layout
    heads = torch.arange(H, device=dev)
    out = torch.full((1, L + T, H, D), float("nan"), device=dev, dtype=torch.bfloat16)
    triton_coreset(qs, ks, vs, heads, out, p)
    torch.cuda.synchronize()
    chk = [0, H - 1]
    qh, kh, vh = (t.transpose(1, 2) for t in (qs, ks, vs))
    ref = reference.coreset_attention(qh[:, chk], kh[:, chk], vh[:, chk], g, cfg.bucket, cfg.ratio, kv_from, T, tv)
    err = rel(out[:, :, chk].transpose(1, 2), ref)
    finite = bool(torch.isfinite(out[:, :L]).all())
    ours = bench(lambda: triton_coreset(qs, ks, vs, heads, out, p))
    pooled = BucketLayout(g, cfg.bucket, cfg.ratio).pooled_length
    Tv = s.text_valid if s.text_valid is not None else T
    qp, kp, vp = (torch.randn(1, H, pooled + Tv, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    ideal = bench(lambda: F.scaled_dot_product_attention(qp, kp, vp))
    qc, kc, vc = (t.contiguous() for t in (qh, kh, vh))
    ref_t = bench(lambda: reference.coreset_attention(qc, kc, vc, g, cfg.bucket, cfg.ratio, kv_from, T, tv), rep_ms=100)
    dense = bench(lambda: F.scaled_dot_product_attention(qc, kc, vc))
    flops = 4 * D * H * (pooled + Tv) ** 2
    rows.append(dict(branch="coreset", shape=s.name, tile="2x3x2 r0.5", heads=H, ms=ours, tflops=flops / ours / 1e9,
                     dense=dense, ideal=ideal, ref=ref_t, err=err, ok=finite))


def table(rows: List[Dict]) -> str:
    lines = []
    sl = [r for r in rows if r["branch"] == "sliding"]
    if sl:
        lines += ["| sliding tile | tile | heads | ours ms (median of 3, range) | exec TFLOP/s | vs SDPA dense | vs Flex (tiled) | vs torch ref | rel err (bf16) | flex err |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sl:
            lines.append(f"| {r['shape']} | {r['tile']} | {r['heads']} | {r['ms']:.2f} ({r['spread'][0]:.2f}–{r['spread'][1]:.2f}) | {r['tflops']:.0f} | "
                         f"{r['dense'] / r['ms']:.2f}x ({r['dense']:.1f} ms) | {r['flex'] / r['ms']:.2f}x ({r['flex']:.1f} ms) | "
                         f"{r['ref'] / r['ms']:.1f}x | {r['err']:.2e}{'' if r['ok'] else ' NONFINITE'} | {r['flex_err']:.1e} |")
    co = [r for r in rows if r["branch"] == "coreset"]
    if co:
        lines += ["", "| coreset | heads | ours ms (select+attn+unpool) | exec TFLOP/s | / SDPA on pooled (ideal) | vs torch ref (official-style) | vs SDPA dense full | rel err (bf16) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in co:
            lines.append(f"| {r['shape']} | {r['heads']} | {r['ms']:.2f} | {r['tflops']:.0f} | {r['ms'] / r['ideal']:.3f} ({r['ideal']:.1f} ms) | "
                         f"{r['ref'] / r['ms']:.2f}x ({r['ref']:.1f} ms) | {r['dense'] / r['ms']:.2f}x | {r['err']:.2e}{'' if r['ok'] else ' NONFINITE'} |")
    return "\n".join(lines)


def sweep(shapes: List[Shape], configs: List[str], dev) -> int:
    """Time the sliding kernel under several launch configs (kernel tuning)."""
    import os

    from comfyui_vorta.vorta.kernels.launch import triton_sliding

    for s in shapes:
        g = TokenGrid(*s.grid)
        L, T, H, D = g.numel, s.text, s.heads, 128
        p = AttentionProblem(g, VortaConfig(tile=s.tile), text_len=T)
        q, k, v = (torch.randn(1, L + T, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
        out = torch.empty_like(q)
        heads = torch.arange(H, device=dev)
        flops = 4 * D * H * sliding_pairs(s)
        for c in configs:
            os.environ["VORTA_STA_CONFIG"] = c
            try:
                ms = bench(lambda: triton_sliding(q, k, v, heads, out, p))
                print(f"sweep | {s.name} | {c} | {ms:.2f} ms | {flops / ms / 1e9:.0f} TFLOP/s", flush=True)
            except Exception as e:
                print(f"sweep | {s.name} | {c} | failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
        os.environ.pop("VORTA_STA_CONFIG", None)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/kernel_bench.py")
    ap.add_argument("--only", choices=["sliding", "coreset"])
    ap.add_argument("--shapes", help="comma-separated indices into the shape list")
    ap.add_argument("--quick", action="store_true", help="skip the slow reference timings")
    ap.add_argument("--md", help="write the tables with a header to this markdown file")
    ap.add_argument("--sweep", help="sliding kernel configs to time, e.g. '128,64,8,3;64,64,4,3' (BLOCK_M,BLOCK_N,warps,stages[,tma 0|1])")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    dev = torch.device("cuda")
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")] if args.shapes else SHAPES
    rows: List[Dict] = []
    if args.sweep:
        return sweep(shapes, args.sweep.split(";"), dev)
    for s in shapes:
        for branch, fn in (("sliding", run_sliding), ("coreset", run_coreset)):
            if args.only and branch != args.only:
                continue
            if branch == "coreset" and "aligned" in s.name:
                continue
            print(f"... {branch} {s.name}", flush=True)
            fn(s, dev, args.quick, rows)
            torch.cuda.empty_cache()
    header = (f"{datetime.date.today()} | {torch.cuda.get_device_name()} | torch {torch.__version__} | "
              f"triton {triton.__version__} | python {platform.python_version()} | bf16, B=1, D=128, window 3x3x3 tiles")
    text = header + "\n\n" + table(rows)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
