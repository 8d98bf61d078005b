"""Bucketed coreset attention: a fused select-and-pool kernel and a fused unpool kernel.

Together with dense attention on the pooled sequence they equal ``vorta.reference.coreset_attention``, with the
text before or after the video: video token ``r`` is sequence row ``video_row0 + r``.

* ``coreset_pool_kernel`` — per (batch, head, group of buckets): cosine similarity (fp32) of each margin with
  its bucket center, rank margins by the reference's total order (``vorta.reference.coreset_select``:
  (similarity, slot) ascending, a NaN similarity after every number), keep the first ``k``; write the kept rows
  into the pooled buffers and, per token, the pooled row it takes its output from.  The order is total, so the
  margins' ranks are distinct and every pooled row is written exactly once, whatever the data.
  Pooled order is the reference's: the centers (row g for bucket g), then each bucket's kept margins by rank
  from row ``OFFSET[g]``.  Attention does not depend on the order mathematically, but SDPA backends treat
  NaN/inf differently by position, so the pooled sequence equals the reference's row for row.
* ``coreset_unpool_kernel`` — each token (and text token) copies its source row of the pooled output (any
  strides: SDPA backends return different layouts) into
  the ``[B, S, H, D]`` output at its head; padded text rows get 0.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..reference import NAN_SIMILARITY_KEY

NAN_KEY: tl.constexpr = tl.constexpr(NAN_SIMILARITY_KEY)  # the reference's sort key of a NaN similarity


@triton.jit
def coreset_pool_kernel(
    X, Q, K, V, QP, KP, VP, SRC,
    MEMBERS, CENTER, KEEP, OFFSET, HEADS,
    sxb, sxs, sxh, sqb, sqs, sqh, skb, sks, skh, svb, svs, svh,
    n_heads_sel, n_buckets, video_len, video_row0, pooled_rows,
    WRITE_Q: tl.constexpr, WRITE_KV: tl.constexpr, WRITE_SRC: tl.constexpr,
    BG: tl.constexpr, BK: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    pid_g = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads_sel).to(tl.int64)
    head = tl.load(HEADS + pid_bh % n_heads_sel).to(tl.int64)
    g = pid_g * BG + tl.arange(0, BG)  # [BG]
    g_ok = g < n_buckets
    slot = tl.arange(0, BK)  # [BK]
    d = tl.arange(0, HEAD_DIM)
    idx = tl.load(MEMBERS + g[:, None] * BK + slot[None, :], mask=g_ok[:, None], other=-1)  # [BG, BK]
    ok = idx >= 0
    cslot = tl.load(CENTER + g, mask=g_ok, other=0)
    keep = tl.load(KEEP + g, mask=g_ok, other=0)
    offset = tl.load(OFFSET + g, mask=g_ok, other=0)
    is_center = slot[None, :] == cslot[:, None]

    idx3 = (video_row0 + tl.where(ok, idx, 0)).to(tl.int64)[:, :, None]  # [BG, BK, 1] sequence rows
    ok3 = ok[:, :, None]
    d3 = d[None, None, :]
    x = tl.load(X + b * sxb + head * sxh + idx3 * sxs + d3, mask=ok3, other=0.0).to(tl.float32)  # [BG, BK, D]
    xn = x / tl.maximum(tl.sqrt(tl.sum(x * x, 2)), 1e-12)[:, :, None]
    cn = tl.sum(tl.where(is_center[:, :, None], xn, 0.0), 1)  # [BG, D] normalised center
    sim = tl.sum(xn * cn[:, None, :], 2)  # [BG, BK]
    margin = ok & (~is_center)
    sim = tl.where(sim == sim, sim, NAN_KEY)  # NaN: after every cosine, so the order below stays total
    sim = tl.where(margin, sim, float("inf"))
    # rank_i = #{valid margins j : sim_j < sim_i or (sim_j == sim_i and j < i)}: distinct for distinct margins
    si = sim[:, :, None]
    sj = sim[:, None, :]
    before = (sj < si) | ((sj == si) & (slot[None, None, :] < slot[None, :, None]))
    before = before & margin[:, None, :]
    rank = tl.sum(before.to(tl.int32), 2)  # [BG, BK]
    kept = margin & (rank < keep[:, None])
    pos = tl.where(kept, offset[:, None] + rank, g[:, None])  # pooled row: centers first, then kept margins
    write = kept | (is_center & ok)

    row = (pid_bh.to(tl.int64) * pooled_rows + pos.to(tl.int64))[:, :, None]
    w3 = write[:, :, None]
    if WRITE_Q:
        tl.store(QP + row * HEAD_DIM + d3, x.to(QP.dtype.element_ty), mask=w3)
    if WRITE_KV:
        kk = tl.load(K + b * skb + head * skh + idx3 * sks + d3, mask=w3, other=0.0)
        vv = tl.load(V + b * svb + head * svh + idx3 * svs + d3, mask=w3, other=0.0)
        tl.store(KP + row * HEAD_DIM + d3, kk, mask=w3)
        tl.store(VP + row * HEAD_DIM + d3, vv, mask=w3)
    if WRITE_SRC:
        tl.store(SRC + pid_bh.to(tl.int64) * video_len + idx.to(tl.int64), pos, mask=ok)


@triton.jit
def coreset_unpool_kernel(
    OP, SRC, O, HEADS, TEXT_VALID,
    spb, sph, sps, sob, sos, soh,
    n_heads_sel, video_len, pooled_video, seq_len, video_row0, text_row0,
    HAS_TEXT_VALID: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """Sequence row t: video token t - video_row0 takes pooled row SRC[...]; text token j = t - text_row0 takes
    pooled row pooled_video + j (0 when padded)."""
    pid = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads_sel).to(tl.int64)
    head = tl.load(HEADS + pid_bh % n_heads_sel).to(tl.int64)
    t = pid * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    in_seq = t < seq_len
    r = t - video_row0
    is_video = (r >= 0) & (r < video_len)
    j = t - text_row0
    src = tl.load(SRC + pid_bh.to(tl.int64) * video_len + r, mask=is_video, other=0)
    src = tl.where(is_video, src, pooled_video + j)  # text rows follow the pooled video
    live = in_seq
    if HAS_TEXT_VALID:
        live = live & (is_video | (j < tl.load(TEXT_VALID + b)))
    hi = (pid_bh % n_heads_sel).to(tl.int64)
    rows = tl.load(OP + b * spb + hi * sph + src.to(tl.int64)[:, None] * sps + d[None, :], mask=live[:, None], other=0.0)
    tl.store(O + b * sob + head * soh + t.to(tl.int64)[:, None] * sos + d[None, :], rows, mask=in_seq[:, None])
