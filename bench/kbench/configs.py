"""Sliding-kernel launch configs forced one by one through ``VORTA_STA_CONFIG`` on the current GPU: the configs a
consumer card would get (``--consumer``: RTX 40 = Ada, ~100 KB shared memory per block and no TMA; RTX 50 =
sm_120, same shared memory, TMA) or a hand-written list (``--sweep``).  Each is checked against the PyTorch
reference (relative error, finiteness) before it is timed.

On an H100 this says whether each config is correct and how fast it is relative to the others, not how fast a
consumer card is; the shared memory the compiled kernels use (Triton's metadata, compiled for this GPU) says
whether the pick would fit ~100 KB."""
from __future__ import annotations

import contextlib
import os
from typing import Dict, List, Optional, Tuple

import torch

from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.geometry import TileLayout, TokenGrid

from .branches import problem
from .measure import NAN, bench, rel_l2, report_failure, sliding_flops
from .shapes import HEAD_DIM, Shape

CONSUMER_SMEM = 101376  # bytes of shared memory per block (opt-in) on RTX 40 / RTX 50 cards
CONSUMER_TARGETS = (("RTX 40 (Ada, no TMA)", False), ("RTX 50 (sm_120, TMA)", True))
ENV = "VORTA_STA_CONFIG"


@contextlib.contextmanager
def forced(value: Optional[str]):
    """``VORTA_STA_CONFIG`` set to ``value`` (None: unset) inside, restored after."""
    saved = os.environ.pop(ENV, None)
    if value is not None:
        os.environ[ENV] = value
    try:
        yield
    finally:
        os.environ.pop(ENV, None)
        if saved is not None:
            os.environ[ENV] = saved


def env_string(c) -> str:
    """A LaunchConfig as ``VORTA_STA_CONFIG`` reads it (every field, so nothing falls back to the GPU's default)."""
    return f"{c.block_m},{c.block_n},{c.warps},{c.stages},{int(c.tma)},{c.tail_n},{int(c.row_split)}"


def smem_estimate(c, elem_size: int = 2) -> int:
    """The launcher's own estimate (``sliding_configs``): K/V buffers in flight + the Q block."""
    return ((c.stages - 1) * 2 * c.block_n + c.block_m) * HEAD_DIM * elem_size


def consumer_configs(s: Shape) -> List[Tuple[str, object]]:
    """(target, LaunchConfig) for every config ``sliding_configs`` lists for a consumer card at this tile, with
    the forced-config variable unset while asking (it would short-circuit the list)."""
    from comfyui_vorta.vorta.kernels.sliding_launch import sliding_configs

    layout = TileLayout(TokenGrid(*s.grid), s.tile)
    segment = min(3, layout.tile_grid[2]) * layout.tile_tokens  # window 3 along W, as the op computes it
    out, seen = [], set()
    with forced(None):
        for target, tma in CONSUMER_TARGETS:
            for c in sliding_configs(layout.tile_tokens, HEAD_DIM, None, segment, 2, smem_limit=CONSUMER_SMEM,
                                     tma=tma):
                if c not in seen:
                    seen.add(c)
                    out.append((target, c))
    return out


def parse_sweep(text: str) -> List[Tuple[str, object]]:
    """``--sweep 'BM,BN,warps,stages[,tma[,tail_n[,row_split]]];...'`` -> ('sweep', LaunchConfig) pairs, parsed
    the way the launcher parses the variable (so a malformed entry fails here, before any GPU work)."""
    from comfyui_vorta.vorta.kernels import sliding_launch

    dev = torch.device("cuda") if torch.cuda.is_available() else None  # an omitted tma field: this GPU's default
    out = []
    for part in (p.strip() for p in text.split(";")):
        if part:
            with forced(part):
                out.append(("sweep", sliding_launch.sliding_configs(256, HEAD_DIM, dev)[0]))
    return out


def _compiled_shared() -> Dict[int, int]:
    """id -> shared memory bytes of every compiled sliding kernel (Triton's per-device caches); {} if unknown."""
    from comfyui_vorta.vorta.kernels.sliding_tile import sliding_tile_fwd_kernel

    global _SHARED_UNREADABLE
    found = {}
    if _SHARED_UNREADABLE:
        return found
    try:
        for caches in sliding_tile_fwd_kernel.device_caches.values():
            for kernel in caches[0].values():
                shared = getattr(getattr(kernel, "metadata", None), "shared", None)
                if shared is not None:
                    found[id(kernel)] = int(shared)
    except Exception as e:  # Triton internals differ between versions: the column stays empty (said once)
        report_failure("reading compiled kernels' shared memory (column left empty)", e)
        _SHARED_UNREADABLE = True
    return found


_SHARED_UNREADABLE = False


_SHARED_SEEN: Dict[tuple, int] = {}


def run_configs(s: Shape, dev, configs: List[Tuple[str, object]], precision: str, fn) -> List[Dict]:
    """One row per config: forced through the variable, checked on two heads, timed."""
    g = TokenGrid(*s.grid)
    B, S, H, D = s.batch, s.seq, s.heads, HEAD_DIM
    p = problem(s, dev)
    gen = torch.Generator(device=dev).manual_seed(3)
    q, k, v = (torch.randn(B, H, S, D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3))
    qkv = tuple(x.transpose(1, 2) for x in (q, k, v))  # [B, S, H, D] views
    chk = [0, H - 1]
    ref = reference.sliding_tile_attention(q[:, chk], k[:, chk], v[:, chk], g, s.tile, (3, 3, 3), s.text,
                                           p.text_valid, s.text_first)
    rows = []
    for target, c in configs:
        row = dict(branch="config", shape=s.name, tile=s.tile, target=target, config=env_string(c),
                   precision=precision, est=smem_estimate(c), shared=None, ms=NAN, tflops=NAN, err=NAN, ok=False)
        rows.append(row)
        print(f"... config {row['config']} ({target}) {s.name}", flush=True)
        with forced(row["config"]):
            try:
                _one_config(s, row, qkv, p, fn, ref, chk)
            except Exception as e:
                row["failed"] = report_failure(f"config {row['config']} on {s.name}", e)
        torch.cuda.empty_cache()
    return rows


def _one_config(s: Shape, row: Dict, qkv, p, fn, ref, chk) -> None:
    qs, ks, vs = qkv
    B, S, H, D = qs.shape
    heads = torch.arange(H, device=qs.device)
    out = torch.full((B, S, H, D), float("nan"), device=qs.device, dtype=torch.bfloat16)
    before = _compiled_shared()
    fn(qs, ks, vs, heads, out, p)
    torch.cuda.synchronize()
    new = [b for i, b in _compiled_shared().items() if i not in before]
    key = (s.tile, s.text > 0, row["config"])
    if new:
        _SHARED_SEEN[key] = max(new)
    row["shared"] = _SHARED_SEEN.get(key)
    row["err"] = rel_l2(out[:, :, chk].transpose(1, 2), ref)
    row["ok"] = bool(torch.isfinite(out).all())
    row["ms"] = bench(lambda: fn(qs, ks, vs, heads, out, p), rep_ms=100)
    row["tflops"] = sliding_flops(s) / row["ms"] / 1e9
