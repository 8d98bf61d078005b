"""Timing, error and FLOP counting shared by every table, plus the cuDNN dense baseline every row is compared to.

Failures are printed (one line, where it happened) and the run goes on: a baseline that cannot run on a GPU must
show up as a failure in the log and a gap in the table, never as a silently different measurement."""
from __future__ import annotations

import contextlib
import math
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .shapes import HEAD_DIM, Shape

NAN = float("nan")


def bench(fn: Callable, rep_ms: int = 200) -> float:
    """Median ms of CUDA-event timed runs after warm-up."""
    import triton

    return float(triton.testing.do_bench(fn, warmup=50, rep=rep_ms, return_mode="median"))


def report_failure(what: str, e: BaseException) -> str:
    """Print a failure as one line with its innermost frame; returns the short text for the table note."""
    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    print(f"  FAILED {what}{where}: {msg}", file=sys.stderr, flush=True)
    if isinstance(e, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
    return msg


def attempt(what: str, fn: Callable, default=None):
    """fn(), or ``default`` after printing why it failed."""
    try:
        return fn()
    except Exception as e:  # report, do not hide
        report_failure(what, e)
        return default


def rel_l2(out: torch.Tensor, ref: torch.Tensor, chunk: int = 1 << 26) -> float:
    """|out - ref| / |ref| over all elements (same logical shape), in fp32 chunks: no full-size fp32 copies."""
    a, b = out.reshape(-1), ref.reshape(-1)
    num = den = 0.0
    for i in range(0, b.numel(), chunk):
        x, y = a[i:i + chunk].float(), b[i:i + chunk].float()
        num += float((x - y).square().sum())
        den += float(y.square().sum())
    return math.sqrt(num / den) if den > 0 else NAN


def dense_flops(s: Shape, length: Optional[int] = None) -> float:
    """4·D·B·H·S² for dense attention over ``length`` rows (default: the whole sequence)."""
    n = s.seq if length is None else length
    return 4.0 * HEAD_DIM * s.batch * s.heads * n * n


def sliding_pairs(s: Shape) -> float:
    """(query, key) pairs the sliding branch computes per (batch, head), video queries only."""
    from comfyui_vorta.vorta.geometry import TokenGrid, sliding_density

    L = s.video
    return sliding_density(TokenGrid(*s.grid), s.tile, (3, 3, 3)) * L * L + L * s.valid_text


def sliding_flops(s: Shape) -> float:
    return 4.0 * HEAD_DIM * s.batch * s.heads * sliding_pairs(s)


@dataclass
class Dense:
    ms: float
    backend: str  # 'cuDNN' or 'default SDPA (cuDNN failed: ...)'

    def tflops(self, flops: float) -> float:
        return flops / self.ms / 1e9


def cudnn_context():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])


def sdpa_cudnn(q, k, v) -> Tuple[torch.Tensor, str]:
    """SDPA forced to cuDNN, else PyTorch's default choice (the fallback named in the returned note)."""
    try:
        with cudnn_context():
            return F.scaled_dot_product_attention(q, k, v), "cuDNN"
    except Exception as e:
        note = f"default SDPA (cuDNN failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
        print(f"  note: {note}", file=sys.stderr, flush=True)
        return F.scaled_dot_product_attention(q, k, v), note


def time_dense(q, k, v, rep_ms: int = 200) -> Dense:
    """ms of dense attention on [B, H, S, D] tensors, cuDNN forced (fallback: default SDPA, noted)."""
    _, backend = sdpa_cudnn(q, k, v)
    with cudnn_context() if backend == "cuDNN" else contextlib.nullcontext():
        return Dense(bench(lambda: F.scaled_dot_product_attention(q, k, v), rep_ms), backend)


_DENSE: Dict[Tuple[int, int, int], Dense] = {}


def dense_baseline(s: Shape, dev, length: Optional[int] = None) -> Optional[Dense]:
    """cuDNN dense on the shape's (B, H, length or whole sequence), timed once per size and reused."""
    n = s.seq if length is None else length
    key = (s.batch, s.heads, n)
    if key not in _DENSE:
        def run():
            q, k, v = (torch.randn(s.batch, s.heads, n, HEAD_DIM, device=dev, dtype=torch.bfloat16) for _ in range(3))
            return time_dense(q, k, v)

        got = attempt(f"cuDNN dense B={s.batch} H={s.heads} S={n}", run)
        if got is None:
            return None
        _DENSE[key] = got
    return _DENSE[key]
