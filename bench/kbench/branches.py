"""Our two sparse branches per precision, and their rows: sliding tile against cuDNN dense, FlexAttention and the
PyTorch reference; coreset against its ideal (cuDNN dense on the pooled length) and the reference.

The branches call the custom ops directly (not ``triton_sliding``, which falls back to the PyTorch reference
when no launch config fits): a kernel that cannot run must fail here, not be timed as the reference."""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Tuple

import torch

from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid
from comfyui_vorta.vorta.routing import AttentionProblem

from .measure import NAN, attempt, bench, dense_baseline, dense_flops, rel_l2, report_failure, sliding_flops
from .shapes import HEAD_DIM, Shape

class UnknownPrecision(ValueError):
    """The branches have no path for this precision (yet)."""


def _sliding(q, k, v, heads, out, p: AttentionProblem, **op_kwargs) -> None:
    from comfyui_vorta.vorta.kernels.sliding_launch import sliding_tile_op

    c = p.config
    sliding_tile_op(q, k, v, heads, out, list(p.grid.shape), list(c.tile), list(c.window), p.text_len,
                    p.text_valid, p.text_first, True, **op_kwargs)


def _coreset(q, k, v, heads, out, p: AttentionProblem, **op_kwargs) -> None:
    from comfyui_vorta.vorta.kernels.coreset_launch import coreset_op

    c = p.config
    coreset_op(q, k, v, heads, out, list(p.grid.shape), list(c.bucket), float(c.ratio), p.kv_from == "key",
               p.text_len, p.text_valid, p.text_first, True, **op_kwargs)


def branch_runners(precision: str) -> Tuple[Callable, Callable]:
    """(sliding, coreset) callables ``(q, k, v, heads, out, problem)`` computing the branch at ``precision``."""
    runners = {
        "bf16": (_sliding, _coreset),
        "8bit": (functools.partial(_sliding, quant=True), functools.partial(_coreset, quant=True)),  # INT8 QK, FP8 PV
    }
    if precision not in runners:
        raise UnknownPrecision(f"no {precision!r} path in the sparse branches yet (known: {', '.join(runners)})")
    return runners[precision]


def problem(s: Shape, dev, kv_from: str = "query") -> AttentionProblem:
    tv = torch.full((s.batch,), s.text_valid, device=dev, dtype=torch.int32) if s.text_valid is not None else None
    return AttentionProblem(TokenGrid(*s.grid), VortaConfig(tile=s.tile), kv_from=kv_from, text_len=s.text,
                            text_valid=tv, text_first=s.text_first)


def _first_run(fn: Callable, args: tuple, row: Dict, what: str) -> bool:
    """The branch's first call (compiles, picks its launch config); a failure is recorded in ``row``, not raised."""
    try:
        fn(*args)
        torch.cuda.synchronize()
        return True
    except Exception as e:
        row["failed"] = report_failure(what, e)
        return False


def run_sliding(s: Shape, dev, precision: str, fn: Callable, quick: bool, flex_on: bool) -> Dict:
    """One sliding row: correctness on two heads at full size, then ours timed three times between baselines."""
    from .flex import flex_sliding

    row = dict(branch="sliding", shape=s.name, batch=s.batch, tile=s.tile, heads=s.heads, seq=s.seq,
               precision=precision, ms=NAN, spread=(NAN, NAN), err=NAN, ok=False, flex=NAN, flex_err=NAN, ref=NAN)
    g = TokenGrid(*s.grid)
    B, S, H, D = s.batch, s.seq, s.heads, HEAD_DIM
    p = problem(s, dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3))
    qs, ks, vs = (x.transpose(1, 2) for x in (q, k, v))  # Hunyuan-style strided [B, S, H, D] view, no copy
    heads = torch.arange(H, device=dev)
    out = torch.full((B, S, H, D), float("nan"), device=dev, dtype=torch.bfloat16)
    if not _first_run(fn, (qs, ks, vs, heads, out, p), row, f"sliding {precision} {s.name}"):
        return row
    chk = [0, H - 1]
    ref = reference.sliding_tile_attention(q[:, chk], k[:, chk], v[:, chk], g, s.tile, (3, 3, 3), s.text,
                                           p.text_valid, s.text_first)
    row["err"] = rel_l2(out[:, :, chk].transpose(1, 2), ref)
    row["ok"] = bool(torch.isfinite(out).all())

    def ours():
        fn(qs, ks, vs, heads, out, p)

    runs = [bench(ours)]  # timed three times, between the baselines: the spread shows the noise
    row["dense"] = dense_baseline(s, dev)
    runs.append(bench(ours))
    if flex_on:
        def flex_run():
            f = flex_sliding(s, q, k, v)
            return rel_l2(f()[:, chk], ref), bench(f)

        row["flex_err"], row["flex"] = attempt(f"flex {s.name}", flex_run, (NAN, NAN))
    runs.append(bench(ours))
    row["ms"], row["spread"] = sorted(runs)[1], (min(runs), max(runs))
    row["tflops"] = sliding_flops(s) / row["ms"] / 1e9
    if not quick and s.video <= 80000:
        row["ref"] = attempt(f"torch reference {s.name}", lambda: bench(
            lambda: reference.sliding_tile_attention(q, k, v, g, s.tile, (3, 3, 3), s.text, p.text_valid,
                                                     s.text_first), rep_ms=50), NAN)
    return row


def run_coreset(s: Shape, dev, precision: str, fn: Callable, quick: bool) -> Dict:
    """One coreset row: correctness on two heads, ours, the ideal (cuDNN on the pooled length), the reference."""
    kv_from = "key" if s.family == "hunyuan" else "query"
    cfg = VortaConfig(tile=s.tile)
    pooled = BucketLayout(TokenGrid(*s.grid), cfg.bucket, cfg.ratio).pooled_length
    row = dict(branch="coreset", shape=s.name, batch=s.batch, heads=s.heads, seq=s.seq, precision=precision,
               pooled=pooled, ms=NAN, err=NAN, ok=False, ref=NAN, ideal=None, dense=None)
    g = TokenGrid(*s.grid)
    B, S, H, D = s.batch, s.seq, s.heads, HEAD_DIM
    p = problem(s, dev, kv_from)
    gen = torch.Generator(device=dev).manual_seed(1)
    x = [torch.randn(B, S, H * D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3)]
    qs, ks, vs = (t.view(B, S, H, D) for t in x)  # Wan-style layout
    heads = torch.arange(H, device=dev)
    out = torch.full((B, S, H, D), float("nan"), device=dev, dtype=torch.bfloat16)
    if not _first_run(fn, (qs, ks, vs, heads, out, p), row, f"coreset {precision} {s.name}"):
        return row
    chk = [0, H - 1]
    qh, kh, vh = (t.transpose(1, 2) for t in (qs, ks, vs))
    ref = reference.coreset_attention(qh[:, chk], kh[:, chk], vh[:, chk], g, cfg.bucket, cfg.ratio, kv_from, s.text,
                                      p.text_valid, s.text_first)
    row["err"] = rel_l2(out[:, :, chk].transpose(1, 2), ref)
    row["ok"] = bool(torch.isfinite(out).all())
    row["ms"] = bench(lambda: fn(qs, ks, vs, heads, out, p))
    row["tflops"] = dense_flops(s, pooled + s.valid_text) / row["ms"] / 1e9
    row["ideal"] = dense_baseline(s, dev, pooled + s.valid_text)
    if not quick or s.video <= 80000:
        qc, kc, vc = (t.contiguous() for t in (qh, kh, vh))
        row["ref"] = attempt(f"coreset torch reference {s.name}", lambda: bench(lambda: reference.coreset_attention(
            qc, kc, vc, g, cfg.bucket, cfg.ratio, kv_from, s.text, p.text_valid, s.text_first), rep_ms=100), NAN)
        del qc, kc, vc
    row["dense"] = dense_baseline(s, dev)
    return row


def rows_for(s: Shape, dev, parts: List[str], precisions: List[str], quick: bool, flex_on: bool) -> List[Dict]:
    """Every branch row of one shape, per known precision (unknown ones were filtered out by the caller)."""
    rows = []
    for precision in precisions:
        sliding, coreset = branch_runners(precision)
        jobs = [("sliding", lambda: run_sliding(s, dev, precision, sliding, quick, flex_on))]
        if s.coreset:
            jobs.append(("coreset", lambda: run_coreset(s, dev, precision, coreset, quick)))
        for branch, job in jobs:
            if branch not in parts:
                continue
            print(f"... {branch} {precision} {s.name}", flush=True)
            try:
                rows.append(job())
            except Exception as e:  # a failed check or reference: the row says so, the run goes on
                rows.append(dict(branch=branch, shape=s.name, batch=s.batch, heads=s.heads, seq=s.seq,
                                 precision=precision, failed=report_failure(f"{branch} {precision} {s.name}", e)))
            torch.cuda.empty_cache()
    return rows
