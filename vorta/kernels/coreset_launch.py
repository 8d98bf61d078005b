"""Launcher of the coreset kernels (``vorta/kernels/coreset.py``) as the custom op ``vorta::coreset_attention``:
argument checks, bucket tables, select+pool, attention on the pooled sequence (``vorta.reference.pooled_attention``:
SDPA, cuDNN first, the same call as the reference's), unpool.

Data moved: the kept video rows and the text rows of Q/K/V are copied into the pooled buffers (SDPA needs one
contiguous sequence).  Not moved: the inputs are read and the output written in place at their sequence rows
(``video_row0`` / ``text_row0``), for text-first and text-last sequences alike."""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Tuple

import torch
import triton

from ..checks import check_kernel_support
from ..geometry import BucketLayout, TokenGrid, as_triple
from ..reference import pooled_attention
from ..routing import AttentionProblem, sequence_rows
from .common import INTERPRET, check_op_args, check_quant_support, heads32, unit_last
from .coreset import coreset_pool_kernel, coreset_unpool_kernel
from .sliding_launch import sliding_tile_op


@lru_cache(maxsize=32)
def coreset_tables(grid: Tuple[int, int, int], bucket: Tuple[int, int, int], ratio: float, device: str):
    """Device tables for a bucket layout: members (G, BK) padded to a power of two, center slot, kept margins,
    pooled row of each bucket's first kept margin, and the pooled video length.  Pooled order as in the
    reference (``coreset_select``): the G centers, then each bucket's kept margins."""
    layout = BucketLayout(TokenGrid(*grid), bucket, ratio)
    members = layout.members()
    bk = triton.next_power_of_2(members.shape[1])
    if bk != members.shape[1]:
        members = torch.cat([members, members.new_full((members.shape[0], bk - members.shape[1]), -1)], 1)
    keep = layout.keep_count()
    n_buckets = keep.numel()
    offset = n_buckets + torch.cumsum(keep, 0) - keep
    dev = torch.device(device)
    as32 = lambda t: t.to(device=dev, dtype=torch.int32).contiguous()  # noqa: E731
    return as32(members), as32(layout.center_slot()), as32(keep), as32(offset), n_buckets + int(keep.sum()), bk


@torch.library.custom_op("vorta::coreset_attention", mutates_args=("out",))
def coreset_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: torch.Tensor, out: torch.Tensor,
               grid: List[int], bucket: List[int], ratio: float, kv_from_key: bool, text_len: int,
               text_valid: Optional[torch.Tensor], text_first: bool = False, values_checked: bool = False,
               quant: bool = False) -> None:
    """Coreset attention for the heads in ``heads`` of [B, S, H, D] views, written into ``out``.  The sequence
    is [video, text] or, with ``text_first``, [text, video].  ``values_checked``: the head indices and
    ``text_valid`` values were checked by the caller (``routed_attention``), which saves one device read.
    ``quant``: attention on the pooled sequence through the sliding kernel's 8-bit path (one tile, one window)."""
    g = TokenGrid(*grid)
    bucket = list(as_triple(bucket, "bucket"))
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"vorta::coreset_attention: ratio must be in [0, 1), got {ratio}")
    check_op_args(q, k, v, heads, out, g, text_len, text_valid, values_checked, "vorta::coreset_attention")
    if quant:
        check_quant_support(q.device, "vorta::coreset_attention")
    B, S, H, D = q.shape
    L = g.numel
    video_row0, text_row0 = sequence_rows(L, text_len, text_first)
    members, center, keep, offset, pooled, bk = coreset_tables(tuple(grid), tuple(bucket), float(ratio), str(q.device))
    h = heads.numel()
    rows = pooled + text_len
    qp = torch.empty(B, h, rows, D, dtype=q.dtype, device=q.device)
    kp, vp = torch.empty_like(qp), torch.empty_like(qp)
    src = torch.empty(B * h, L, dtype=torch.int32, device=q.device)
    n_buckets = members.shape[0]
    bg = 4 if INTERPRET else max(1, 64 // bk)
    launch = (triton.cdiv(n_buckets, bg), B * h)

    def pool(x, write_q, write_kv, write_src):
        coreset_pool_kernel[launch](
            x, q, k, v, qp, kp, vp, src, members, center, keep, offset, heads,
            x.stride(0), x.stride(1), x.stride(2), q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
            h, n_buckets, L, video_row0, rows, WRITE_Q=write_q, WRITE_KV=write_kv, WRITE_SRC=write_src, BG=bg, BK=bk,
            HEAD_DIM=D, num_warps=4)

    if kv_from_key:  # HunyuanVideo: Q pooled by Q, K/V by K's own selection
        pool(q, True, False, True)
        pool(k, False, True, False)
    else:  # Wan: K/V follow Q's selection
        pool(q, True, True, True)
    if text_len:
        for dst, x in ((qp, q), (kp, k), (vp, v)):
            dst[:, :, pooled:] = x[:, text_row0:text_row0 + text_len].index_select(2, heads).transpose(1, 2)
    if quant:
        op = _pooled_attention_8bit(qp, kp, vp, pooled, text_len, text_valid)
    else:
        op = pooled_attention(qp, kp, vp, text_len, text_valid)  # the reference's call: same rows, same backend
    tv = text_valid.to(device=q.device, dtype=torch.int32) if text_valid is not None else heads
    block = 32 if INTERPRET else 64
    coreset_unpool_kernel[(triton.cdiv(S, block), B * h)](
        op, src, out, heads, tv, op.stride(0), op.stride(1), op.stride(2), out.stride(0), out.stride(1), out.stride(2),
        h, L, pooled, S, video_row0, text_row0, HAS_TEXT_VALID=text_valid is not None, BLOCK=block, HEAD_DIM=D, num_warps=4)


def _pooled_attention_8bit(qp, kp, vp, pooled: int, text_len: int, text_valid) -> torch.Tensor:
    """``pooled_attention`` in 8 bits: the pooled video is one sliding tile whose window is itself, so every query
    sees every pooled row and the valid text (padded text queries' rows are left as computed)."""
    B, h, rows, D = qp.shape
    op = torch.empty(B, rows, h, D, dtype=qp.dtype, device=qp.device)
    every_head = torch.arange(h, dtype=torch.int32, device=qp.device)
    seq = [1, 1, pooled]
    sliding_tile_op(qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2), every_head, op, seq, seq, [1, 1, 1],
                    text_len, text_valid, False, True, True)
    return op.transpose(1, 2)


@coreset_op.register_fake
def _(q, k, v, heads, out, grid, bucket, ratio, kv_from_key, text_len, text_valid, text_first=False,
      values_checked=False, quant=False) -> None:
    return None


def triton_coreset(q, k, v, heads, out, p: AttentionProblem, quant: bool = False) -> None:
    """The coreset branch for ``routed_attention``, which has checked the arguments' values."""
    check_kernel_support(q, "coreset attention")
    c = p.config
    coreset_op(unit_last(q), unit_last(k), unit_last(v), heads32(heads), out, list(p.grid.shape),
               list(c.bucket), float(c.ratio), p.kv_from == "key", p.text_len, p.text_valid, p.text_first, True,
               quant)
