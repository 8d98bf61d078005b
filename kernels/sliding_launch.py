"""Launcher of the sliding tile kernel (``kernels/sliding_tile.py``) as the custom op
``vorta::sliding_tile_attention``: launch configs, tile tables, the text-query split, and the fallback to
smaller configs / the PyTorch reference when a GPU runs out of shared memory."""
from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import torch
import triton
from triton.runtime.errors import OutOfResources

try:  # host-side TMA descriptors (Triton >= 3.3)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton: pointer loads only
    TensorDescriptor = None

from ..vorta.geometry import TileLayout, TokenGrid
from ..vorta.routing import AttentionProblem, reference_sliding
from .common import INTERPRET, check_inputs, heads32, unit_last
from .sliding_tile import sliding_tile_fwd_kernel, tile_gather_kernel



Config = Tuple[int, int, int, int, bool]  # BLOCK_M, BLOCK_N, num_warps, num_stages, TMA
SMALLER_CONFIGS = [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 1)]


def sliding_configs(tile_tokens: int, head_dim: int, device=None, segment_tokens: int = 0,
                    elem_size: int = 2) -> List[Config]:
    """Launch configs to try, best first.  The first is measured on the H100 (bench/results, launch sweep):
    the query block that pads a tile least; K/V through TMA on Hopper and newer; 128-key blocks when a window
    segment (``segment_tokens`` keys) splits into them without a masked tail (TMA only).  Smaller ones follow for
    GPUs with less shared memory (consumer cards have ~100 KB per block); configs whose K/V pipeline cannot fit
    the device's shared memory are left out.  ``VORTA_STA_CONFIG="128,64,8,3[,tma]"`` forces one config."""
    tma = _tma_default(device)
    env = os.environ.get("VORTA_STA_CONFIG")
    if env:
        v = [int(x) for x in env.split(",")]
        return [(v[0], v[1], v[2], v[3], bool(v[4]) if len(v) > 4 else tma)]
    if INTERPRET:
        return [(32, 32, 4, 1, False), (16, 16, 4, 1, False)]
    waste = {bm: math.ceil(tile_tokens / bm) * bm - tile_tokens for bm in (128, 64)}
    if waste[128] > waste[64]:
        best = (64, 64, 4, 3)
    else:
        best = (128, 128 if tma and segment_tokens and segment_tokens % 128 == 0 else 64, 8, 3)
    limit = _smem_limit(device)
    out: List[Config] = []
    for bm, bn, warps, stages in [best] + SMALLER_CONFIGS:
        need = ((stages - 1) * 2 * bn + bm) * head_dim * elem_size  # K/V buffers in flight + Q
        if (bm, bn, warps, stages, tma) not in out and (limit is None or need <= limit or bm == 32):
            out.append((bm, bn, warps, stages, tma))
    return out


@lru_cache(maxsize=8)
def _smem_limit(device) -> Optional[int]:
    if device is None or torch.device(device).type != "cuda":
        return None
    return getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", None)


def _tma_default(device) -> bool:
    if INTERPRET or TensorDescriptor is None or device is None or torch.device(device).type != "cuda":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


@lru_cache(maxsize=32)
def tile_tables(grid: Tuple[int, int, int], tile: Tuple[int, int, int], device: str):
    """Device tables for a tile layout: raster index of each tile-order position (compacted) and the
    tile-order start of each tile (num_tiles + 1 entries)."""
    layout = TileLayout(TokenGrid(*grid), tile)
    sizes = torch.bincount(layout.token_tile(), minlength=layout.num_tiles)
    start = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])
    dev = torch.device(device)
    return (layout.permutation().to(device=dev, dtype=torch.int32).contiguous(),
            start.to(device=dev, dtype=torch.int32).contiguous())


@torch.library.custom_op("vorta::sliding_tile_attention", mutates_args=("out",))
def sliding_tile_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: torch.Tensor, out: torch.Tensor,
                    grid: List[int], tile: List[int], window: List[int], text_len: int,
                    text_valid: Optional[torch.Tensor]) -> None:
    """Sliding tile attention for the heads in ``heads`` of [B, S, H, D] views, written into ``out``."""
    B, S, H, D = q.shape
    g = TokenGrid(*grid)
    L = g.numel
    layout = TileLayout(g, tuple(tile))
    nf, nh, nw = layout.tile_grid
    segment = min(window[2], nw) * layout.tile_tokens  # keys in one window segment (interior tiles)
    configs = sliding_configs(layout.tile_tokens, D, q.device, segment, q.element_size())
    key = (str(q.device), q.dtype, tuple(configs))
    if key in _NO_CONFIG:  # known: nothing fits (do not recompile every call)
        raise NoKernelConfig(_NO_CONFIG[key])
    h = heads.numel()
    perm, tile_start = tile_tables(tuple(grid), tuple(tile), str(q.device))
    kt = torch.empty(B * h, L, D, dtype=k.dtype, device=k.device)
    vt = torch.empty_like(kt)
    gblock = 32 if INTERPRET else 64
    tile_gather_kernel[(triton.cdiv(L, gblock), B * h)](
        k, v, kt, vt, perm, heads, k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        h, L, BLOCK=gblock, HEAD_DIM=D, num_warps=4)
    tv = text_valid.to(device=q.device, dtype=torch.int32) if text_valid is not None else heads
    errors = []
    for i in range(_WORKING_CONFIG.get(key, 0), len(configs)):
        try:
            _sliding_launches(q, k, v, kt, vt, out, heads, tile_start, tv, text_valid, g, layout, tile, window,
                              text_len, configs[i])
        except OutOfResources as e:  # too little shared memory on this GPU: try the next, smaller config
            errors.append(f"{configs[i][:4]}: {e}")
            continue
        _WORKING_CONFIG[key] = i
        return
    _NO_CONFIG[key] = "no launch config of the sliding tile kernel fits this GPU (" + "; ".join(errors) + ")"
    raise NoKernelConfig(_NO_CONFIG[key])


_WORKING_CONFIG: Dict[tuple, int] = {}  # index of the config that launched, per (device, dtype, config list)
_NO_CONFIG: Dict[tuple, str] = {}  # (device, dtype, config list) where none launched -> why


class NoKernelConfig(RuntimeError):
    """Every launch config ran out of GPU resources; the branch falls back to the PyTorch reference."""


def _sliding_launches(q, k, v, kt, vt, out, heads, tile_start, tv, text_valid, g, layout, tile, window, text_len,
                      config: Config) -> None:
    """The video-query launch and, with text, the split text-query launch and its merge."""
    B, S, H, D = q.shape
    L = g.numel
    h = heads.numel()
    nf, nh, nw = layout.tile_grid
    bm, bn, warps, stages, tma = config
    tma = tma and B * h * L < 2**31
    if tma:
        kd, vd = (TensorDescriptor.from_tensor(x.view(B * h * L, D), [bn, D]) for x in (kt, vt))
    else:
        kd, vd = kt, vt

    def launch(programs: int, text_queries: bool, ws=(heads, heads, heads), splits: int = 1, chunk: int = 0) -> None:
        sliding_tile_fwd_kernel[(programs, B * h)](
            q, kt, vt, kd, vd, k, v, out, heads, tile_start, tv, *ws,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            h, 1.4426950408889634 / math.sqrt(D),
            g.frames, g.height, g.width, nf, nh, nw, L, text_len, splits, chunk,
            TF=tile[0], TH=tile[1], TW=tile[2], RF=window[0] // 2, RH=window[1] // 2, RW=window[2] // 2,
            HAS_TEXT=text_len > 0, HAS_TEXT_VALID=text_valid is not None, TEXT_QUERIES=text_queries,
            BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=D, USE_TMA=tma, num_warps=warps, num_stages=stages,
        )

    launch(layout.num_tiles * math.ceil(layout.tile_tokens / bm), False)  # video query tiles
    if not text_len:
        return
    # Text rows: dense over every video key + valid text.  About one query block per head would leave most
    # SMs idle, so the video keys are split into chunks (partials merged here by log-sum-exp).
    T = text_len
    q_blocks = triton.cdiv(T, bm)
    splits = 2 if INTERPRET else max(1, min(64, triton.cdiv(4 * _sm_count(q.device), q_blocks * B * h)))
    chunk = triton.cdiv(triton.cdiv(L, splits), bn) * bn
    splits = triton.cdiv(L, chunk)
    ws_acc = torch.empty(splits, B * h, T, D, dtype=torch.float32, device=q.device)
    ws_m = torch.empty(splits, B * h, T, dtype=torch.float32, device=q.device)
    ws_l = torch.empty_like(ws_m)
    launch(q_blocks * splits, True, (ws_acc, ws_m, ws_l), splits, chunk)
    m = ws_m.amax(0)
    w = torch.exp2(ws_m - m)  # (splits, B*h, T)
    o = ((ws_acc * w[..., None]).sum(0) / (ws_l * w).sum(0)[..., None]).view(B, h, T, D)
    if text_valid is not None:  # padded text rows output 0
        live = torch.arange(T, device=q.device)[None, :] < tv[:, None]
        o = o * live[:, None, :, None]
    out[:, L:, heads.long()] = o.transpose(1, 2).to(out.dtype)


@lru_cache(maxsize=8)
def _sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if torch.cuda.is_available() else 1


@sliding_tile_op.register_fake
def _(q, k, v, heads, out, grid, tile, window, text_len, text_valid) -> None:
    return None


def triton_sliding(q, k, v, heads, out, p: AttentionProblem) -> None:
    check_inputs(q, "sliding tile attention")
    c = p.config
    try:
        sliding_tile_op(unit_last(q), unit_last(k), unit_last(v), heads32(heads), out, list(p.grid.shape),
                        list(c.tile), list(c.window), p.text_len, p.text_valid)
    except NoKernelConfig as e:
        from . import _log_once

        _log_once(f"VORTA: sliding tile heads use the PyTorch reference (slower): {e}")
        reference_sliding(q, k, v, heads, out, p)
