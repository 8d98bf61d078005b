"""Launcher of the sliding tile kernel (``vorta/kernels/sliding_tile.py``) as the custom op
``vorta::sliding_tile_attention``: argument checks, launch configs, tile tables, the text-query split, and the
fallback to smaller configs / the PyTorch reference when a GPU runs out of shared memory; the launch config is
measured per problem key on its first call (``autotune.py``), the fixed rule of ``sliding_configs`` otherwise.

Data moved: K/V of the routed heads are copied once into tile order (text behind the video, either token order);
the text queries' split partials go through a small fp32 workspace.  Not moved: Q is read and O written in place
at their sequence rows (``video_row0`` / ``text_row0``), for text-first and text-last sequences alike."""
from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import triton
from triton.runtime.errors import OutOfResources

try:  # host-side TMA descriptors (Triton >= 3.3)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton: pointer loads only
    TensorDescriptor = None

from ..checks import check_kernel_support
from ..geometry import TileLayout, TokenGrid, as_triple
from ..routing import AttentionProblem, reference_sliding, sequence_rows
from . import autotune
from .common import INTERPRET, check_op_args, check_quant_support, heads32, unit_last
from .log import log_once
from .quantize_launch import KVCopy, quantize_kv
from .sliding_tile import sliding_tile_fwd_kernel, tile_gather_kernel



class LaunchConfig(NamedTuple):
    """How the sliding tile kernel is launched."""
    block_m: int  # query rows per program
    block_n: int  # keys per inner-loop block
    warps: int
    stages: int  # software-pipeline depth of the K/V loads
    tma: bool  # K/V blocks through TMA descriptors (Hopper and newer)
    tail_n: int = 0  # keys per block of a segment's tail (0: block_n)
    row_split: bool = True  # a tile's rows past its last whole block_m run in a second launch, smaller block


SMALLER_CONFIGS = [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 1)]


def scale_scores(block_m: int, quant: bool) -> bool:
    """Where the softmax scale goes: on the fp32 scores for 128-row (or larger) 16-bit blocks, into q otherwise.
    H100 (bench/results/2026-11-24-scale-on-scores-h100.md): 128-row blocks 0-4 % faster with the scale on the
    scores (HunyuanVideo 720p 35.6 -> 34.8 ms), 64-row blocks 24 % slower; the 8-bit path quantizes a pre-scaled q."""
    return block_m >= 128 and not quant


def _pow2_at_least(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, (n - 1).bit_length()))


def sliding_configs(tile_tokens: int, head_dim: int, device=None, segment_tokens: int = 0,
                    elem_size: int = 2, smem_limit: Optional[int] = None,
                    tma: Optional[bool] = None) -> List[LaunchConfig]:
    """Launch configs to try, best first.  The first is measured on the H100 (bench/results, launch sweeps):
    with TMA and tiles of 256+ tokens, 128-row query blocks (a tile's last rows in a smaller block) and 128-key
    blocks with the window segments' tails in the smallest block that holds them; otherwise (small tiles such
    as Wan-1.3B's 192, or no TMA: Ampere, Ada) the query block that pads a tile least and 64-key blocks.  Smaller ones follow for GPUs with less shared memory (consumer cards have
    ~100 KB per block); configs whose K/V pipeline cannot fit the device's shared memory are left out.
    ``VORTA_STA_CONFIG="BM,BN,warps,stages[,tma[,tail_n[,row_split]]]"`` forces one config.  On a GPU the op
    measures ``tune_candidates`` on the first call of each problem key and launches the fastest
    (``vorta/kernels/autotune.py``; ``VORTA_AUTOTUNE=0``: this list's first config that fits, as before).
    ``smem_limit`` (bytes per block) and ``tma`` replace what ``device`` has, to ask what another GPU would get
    (bench/kernel_bench.py --consumer: ~100 KB and no TMA on RTX 40 cards)."""
    tma = _tma_default(device) if tma is None else tma
    env = os.environ.get("VORTA_STA_CONFIG")
    if env:
        v = [int(x) for x in env.split(",")]
        return [LaunchConfig(v[0], v[1], v[2], v[3], bool(v[4]) if len(v) > 4 else tma, *v[5:6],
                             *(bool(x) for x in v[6:7]))]
    if INTERPRET:
        return [LaunchConfig(32, 32, 4, 1, False), LaunchConfig(16, 16, 4, 1, False)]
    best = _rule_config(tile_tokens, segment_tokens, tma)
    limit = _smem_limit(device) if smem_limit is None else smem_limit
    out: List[LaunchConfig] = []
    for c in [best] + [LaunchConfig(*c, tma) for c in SMALLER_CONFIGS]:
        if c not in out and (limit is None or _smem_need(c, head_dim, elem_size) <= limit or c.block_m == 32):
            out.append(c)
    return out


def _rule_config(tile_tokens: int, segment_tokens: int, tma: bool) -> LaunchConfig:
    """The fixed rule's pick (``sliding_configs``' first entry before the shared-memory filter)."""
    if tma and tile_tokens >= 256:  # two or more whole 128-row blocks per tile: the last rows in a second launch
        return LaunchConfig(128, 128, 8, 3, True, _tail_block(segment_tokens, 128))
    # small tiles (or no TMA): the query block that pads a tile least
    waste = {bm: math.ceil(tile_tokens / bm) * bm - tile_tokens for bm in (128, 64)}
    return LaunchConfig(64, 64, 4, 3, tma) if waste[128] > waste[64] else LaunchConfig(128, 64, 8, 3, tma)


def _tail_block(segment_tokens: int, block_n: int) -> int:
    """The smallest power-of-two block (>= 16) holding a window segment's tail past its whole ``block_n`` blocks."""
    tail = segment_tokens % block_n
    return _pow2_at_least(tail) if tail else block_n


def _smem_need(c: LaunchConfig, head_dim: int, elem_size: int) -> int:
    """The launcher's shared-memory estimate: one K and one V buffer per pipeline stage, the Q block, the 8-bit
    path's key scales, TMA barriers.  Equal to what Triton 3.6 allocates for these kernels on sm_90 (measured for
    every consumer config: bench/results/2026-11-24-consumer-configs-h100.md); the earlier (stages - 1) count was
    one stage short, so a consumer card paid a failed compile before the config that fits."""
    scales = c.stages * c.block_n * 4 if elem_size == 1 else 0
    return (c.stages * 2 * c.block_n + c.block_m) * head_dim * elem_size + scales + 64


MAX_CANDIDATES = 8


def tune_candidates(tile_tokens: int, head_dim: int, device=None, segment_tokens: int = 0, elem_size: int = 2,
                    smem_limit: Optional[int] = None, tma: Optional[bool] = None) -> List[LaunchConfig]:
    """Launch configs the autotuner (``vorta/kernels/autotune.py``) times on a new problem key: the rule's pick
    first, then the alternatives that won somewhere in the H100 sweeps (bench/results: 128-row blocks over
    64-key blocks with 3 or 4 stages, 64-row blocks, 128-key blocks with the tail in the smallest block, the
    rule's pick without its row split), at most ``MAX_CANDIDATES``, those whose K/V pipeline cannot fit the
    device's shared memory left out, duplicates (configs that launch the same kernels) dropped."""
    tma = _tma_default(device) if tma is None else tma
    best = _rule_config(tile_tokens, segment_tokens, tma)
    t128 = _tail_block(segment_tokens, 128)
    pool = [best, LaunchConfig(128, 64, 8, 4, tma), LaunchConfig(128, 64, 8, 3, tma), LaunchConfig(64, 64, 4, 3, tma)]
    if tma:  # 128-key blocks pay off with TMA loads only (pointer loads: bench/results/2026-11-23-kernels-h100.md)
        pool += [LaunchConfig(128, 128, 8, 3, True, t128), LaunchConfig(64, 128, 4, 3, True, t128)]
    pool += [best._replace(row_split=False), LaunchConfig(64, 64, 4, 4, tma), LaunchConfig(128, 64, 8, 2, tma),
             LaunchConfig(64, 64, 4, 2, tma)]
    limit = _smem_limit(device) if smem_limit is None else smem_limit
    out: List[LaunchConfig] = []
    seen = set()
    for c in pool:
        same = _launches_as(c, tile_tokens)
        if same not in seen and (limit is None or _smem_need(c, head_dim, elem_size) <= limit):
            seen.add(same)
            out.append(c)
    return out[:MAX_CANDIDATES]


def _launches_as(c: LaunchConfig, tile_tokens: int) -> LaunchConfig:
    """``c`` with the fields that change nothing at this tile size normalized (a tail block equal to the key
    block; the row split of a tile with no rows past its whole blocks, or whose rest rounds up to a whole block)."""
    rest = tile_tokens % c.block_m
    split = bool(rest) and _pow2_at_least(rest) < c.block_m
    return c._replace(tail_n=0 if c.tail_n in (0, c.block_n) else c.tail_n, row_split=c.row_split or not split)


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
                    text_valid: Optional[torch.Tensor], text_first: bool = False,
                    values_checked: bool = False, quant: bool = False) -> None:
    """Sliding tile attention for the heads in ``heads`` of [B, S, H, D] views, written into ``out``.  The
    sequence is [video, text] or, with ``text_first``, [text, video].  ``values_checked``: the head indices and
    ``text_valid`` values were checked by the caller (``routed_attention``), which saves one device read.
    ``quant``: the 8-bit path (INT8 Q·K, FP8 P·V; ``vorta/kernels/quantize.py``), GPUs of compute capability 8.9+."""
    g = TokenGrid(*grid)
    tile, window = list(as_triple(tile, "tile")), list(as_triple(window, "window"))
    check_op_args(q, k, v, heads, out, g, text_len, text_valid, values_checked, "vorta::sliding_tile_attention")
    B, S, H, D = q.shape
    L = g.numel
    video_row0, text_row0 = sequence_rows(L, text_len, text_first)
    layout = TileLayout(g, tuple(tile))
    nf, nh, nw = layout.tile_grid
    segment = min(window[2], nw) * layout.tile_tokens  # keys in one window segment (interior tiles)
    if quant:
        check_quant_support(q.device, "vorta::sliding_tile_attention")
    configs = sliding_configs(layout.tile_tokens, D, q.device, segment, 1 if quant else q.element_size())
    key = (str(q.device), q.dtype, D, tuple(configs), quant)  # whether a config fits depends on the head dim too
    if key in _NO_CONFIG:  # known: nothing fits (do not recompile every call)
        raise NoKernelConfig(_NO_CONFIG[key])
    h = heads.numel()
    perm, tile_start = tile_tables(tuple(grid), tuple(tile), str(q.device))
    tv = text_valid.to(device=q.device, dtype=torch.int32) if text_valid is not None else heads
    if quant:
        kv = quantize_kv(k, v, heads, perm, tv, text_valid is not None, L, text_len, video_row0, text_row0)
    else:
        kt = torch.empty(B * h, L + text_len, D, dtype=k.dtype, device=k.device)  # tile-ordered video, then text
        vt = torch.empty_like(kt)
        gblock = 32 if INTERPRET else 64
        tile_gather_kernel[(triton.cdiv(L + text_len, gblock), B * h)](
            k, v, kt, vt, perm, heads, tv, k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1),
            v.stride(2), h, L, L + text_len, video_row0, text_row0, BLOCK=gblock, HEAD_DIM=D,
            HAS_TEXT_VALID=text_valid is not None, num_warps=4)
        kv = KVCopy(kt, vt, heads, heads, 0)

    def run(config: LaunchConfig) -> None:
        _sliding_launches(q, kv, out, heads, tile_start, tv, text_valid, g, layout, tile, window, text_len,
                          text_first, config)

    if autotune.disabled_reason(forced=bool(os.environ.get("VORTA_STA_CONFIG")), device=q.device) is None:
        elem = 1 if quant else q.element_size()
        tkey = ("sliding", str(q.device), str(q.dtype), D, tuple(grid), tuple(tile), tuple(window), text_len,
                text_valid is not None, bool(text_first), _bh_bucket(B * h), bool(quant))
        what = (f"grid {tuple(grid)} tile {tuple(tile)} window {tuple(window)} text {text_len} B*heads~{tkey[-2]}"
                f"{' 8-bit' if quant else ''}")
        chosen = autotune.choose(
            tkey, lambda: tune_candidates(layout.tile_tokens, D, q.device, segment, elem), configs[0], run,
            q.device, what, lambda: _file_key(tkey, q.device))
        if chosen is not None:
            try:
                run(chosen)  # the chosen config runs last: its result is the output
                return
            except OutOfResources:  # cannot happen for a measured choice; the rule's list below still can run
                pass
    errors = []
    for i in range(_WORKING_CONFIG.get(key, 0), len(configs)):
        try:
            run(configs[i])
        except OutOfResources as e:  # too little shared memory on this GPU: try the next, smaller config
            errors.append(f"{tuple(configs[i][:4])}: {e}")
            continue
        _WORKING_CONFIG[key] = i
        return
    _NO_CONFIG[key] = "no launch config of the sliding tile kernel fits this GPU (" + "; ".join(errors) + ")"
    raise NoKernelConfig(_NO_CONFIG[key])


def _bh_bucket(n: int) -> int:
    """Batch x routed heads rounded up to a power of two: routing changes the head count per layer and step."""
    return 1 << max(0, (n - 1).bit_length())


def _file_key(tkey: tuple, device) -> str:
    """The autotune file's key: GPU name, Triton version and the kernel's source hash instead of the device index."""
    from . import sliding_tile  # the kernel itself, whatever name the launcher holds (tests wrap it)

    source = getattr(sliding_tile.sliding_tile_fwd_kernel, "cache_key", "interpreted")[:16]
    return autotune.key_text((_device_name(device), f"triton {triton.__version__}", source) + tkey[2:])


@lru_cache(maxsize=8)
def _device_name(device) -> str:
    d = torch.device(device)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else d.type


_WORKING_CONFIG: Dict[tuple, int] = {}  # index of the config that launched, per (device, dtype, head dim, configs)
_NO_CONFIG: Dict[tuple, str] = {}  # (device, dtype, head dim, config list) where none launched -> why


class NoKernelConfig(RuntimeError):
    """Every launch config ran out of GPU resources; the branch falls back to the PyTorch reference."""


def _sliding_launches(q, kv: KVCopy, out, heads, tile_start, tv, text_valid, g, layout, tile, window, text_len,
                      text_first: bool, config: LaunchConfig) -> None:
    """The video-query launch(es) and, with text, the split text-query launch and its merge."""
    B, S, H, D = q.shape
    L = g.numel
    video_row0, text_row0 = sequence_rows(L, text_len, text_first)
    h = heads.numel()
    nf, nh, nw = layout.tile_grid
    bm, bn = config.block_m, config.block_n
    tail_n = config.tail_n or bn
    kt, vt, quant = kv.k, kv.v, kv.pitch > 0
    if quant:  # 8-bit dots take at least 32 keys
        tail_n = max(tail_n, 32)
    tma = config.tma and kt.shape[0] * kt.shape[1] < 2**31
    if tma:  # 8-bit: V^T blocks are [D, keys] at 16-key aligned columns (``_attend_segment8``)
        k_rows = kt.view(-1, D)
        v_rows, v_block = (vt.view(-1, kv.pitch), lambda n: [D, n]) if quant else (vt.view(-1, D), lambda n: [n, D])
        kd, vd = TensorDescriptor.from_tensor(k_rows, [bn, D]), TensorDescriptor.from_tensor(v_rows, v_block(bn))
        kd_tail, vd_tail = kd, vd
        if tail_n != bn:
            kd_tail = TensorDescriptor.from_tensor(k_rows, [tail_n, D])
            vd_tail = TensorDescriptor.from_tensor(v_rows, v_block(tail_n))
    else:
        kd, vd, kd_tail, vd_tail = kt, vt, kt, vt

    def launch(programs: int, block_m: int, warps: int, text_queries: bool, row_lo: int = 0, n_rows: int = 0,
               ws=(heads, heads, heads), splits: int = 1, chunk: int = 0) -> None:
        sliding_tile_fwd_kernel[(programs, B * h)](
            q, kt, vt, kd, vd, kd_tail, vd_tail, out, heads, tile_start, tv, *ws, kv.k_scale, kv.v_scale,
            q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2), kv.pitch,
            h, 1.4426950408889634 / math.sqrt(D),
            g.frames, g.height, g.width, nf, nh, nw, L, text_len, video_row0, text_row0, splits, chunk,
            TF=tile[0], TH=tile[1], TW=tile[2], RF=window[0] // 2, RH=window[1] // 2, RW=window[2] // 2,
            ROW_LO=row_lo, ROWS=n_rows, HAS_TEXT=text_len > 0, HAS_TEXT_VALID=text_valid is not None,
            TEXT_QUERIES=text_queries, BLOCK_M=block_m, BLOCK_N=bn, TAIL_N=tail_n, HEAD_DIM=D, USE_TMA=tma,
            QUANT=quant, FP8_DOT=not INTERPRET, SCALE_SCORES=scale_scores(block_m, quant), num_warps=warps,
            num_stages=config.stages,
        )

    # Video query tiles: whole blocks of bm rows, then (row_split) the remaining rows in the smallest block.
    P = layout.tile_tokens
    rest = P % bm
    tail_m = _pow2_at_least(rest)
    if config.row_split and rest and tail_m < bm:
        if P // bm:
            launch(layout.num_tiles * (P // bm), bm, config.warps, False, 0, P - rest)
        launch(layout.num_tiles, tail_m, 4 if tail_m <= 64 else config.warps, False, P - rest, rest)
    else:
        launch(layout.num_tiles * math.ceil(P / bm), bm, config.warps, False, 0, P)
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
    launch(q_blocks * splits, bm, config.warps, True, ws=(ws_acc, ws_m, ws_l), splits=splits, chunk=chunk)
    m = ws_m.amax(0)
    w = torch.exp2(ws_m - m)  # (splits, B*h, T)
    den = (ws_l * w).sum(0)
    den = torch.where(den == 0, 1.0, den)  # all scores -inf: every weight is 0, the output is 0 * V (as in SDPA)
    o = ((ws_acc * w[..., None]).sum(0) / den[..., None]).view(B, h, T, D)
    if text_valid is not None:  # padded text rows output 0 (replaced: 0 * NaN would stay NaN)
        live = torch.arange(T, device=q.device)[None, :] < tv[:, None]
        o = torch.where(live[:, None, :, None], o, 0.0)
    out[:, text_row0:text_row0 + T, heads.long()] = o.transpose(1, 2).to(out.dtype)


@lru_cache(maxsize=8)
def _sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if torch.cuda.is_available() else 1


@sliding_tile_op.register_fake
def _(q, k, v, heads, out, grid, tile, window, text_len, text_valid, text_first=False, values_checked=False,
      quant=False) -> None:
    return None


def triton_sliding(q, k, v, heads, out, p: AttentionProblem, quant: bool = False) -> None:
    """The sliding branch for ``routed_attention``, which has checked the arguments' values."""
    check_kernel_support(q, "sliding tile attention")
    c = p.config
    try:
        sliding_tile_op(unit_last(q), unit_last(k), unit_last(v), heads32(heads), out, list(p.grid.shape),
                        list(c.tile), list(c.window), p.text_len, p.text_valid, p.text_first, True, quant)
    except NoKernelConfig as e:
        log_once(f"VORTA: sliding tile heads use the PyTorch reference (slower): {e}")
        reference_sliding(q, k, v, heads, out, p)
