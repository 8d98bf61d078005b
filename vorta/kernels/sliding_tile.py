"""Fused sliding tile attention (forward), one launch for all routed heads.

Equals ``vorta.reference.sliding_tile_attention`` for any grid, tile and window, with the text before or
after the video: video token ``r`` is sequence row ``VIDEO_ROW0 + r``, text token ``j`` is row ``TEXT_ROW0 + j``.

Where the tile permutation happens:
* queries and outputs: in the kernel's index math.  Each program owns one block of one query tile and
  computes the raster address of every row from its tile coordinates (``[B, S, H, D]`` views with any
  strides: Wan's ``[B, L, H*D]``, Hunyuan's ``[B, H, L, D]``), so Q is read and O written in place;
* keys/values: ``tile_gather_kernel`` copies the routed heads' K and V once into tile order
  (compacted: partial border tiles take only their real tokens), followed by the text tokens.  In tile
  order the window's tiles along W are adjacent, so a query tile's keys are ``wF*wH`` contiguous segments of
  ``wW`` tiles (1,080 keys for Wan's 5x9x8 tiles), and the valid text is one more segment: key blocks run
  across tile boundaries, only each segment's tail needs a mask, and loads are plain contiguous rows.  The
  copy is memory-bound (~2 x 0.7 GB at Wan-14B 720p with 40 heads, about 1 ms) and buys unmasked, index-free
  inner loops.
A segment runs in ``BLOCK_N``-key blocks, then its tail in ``TAIL_N``-key blocks (Wan's 1,080 = 8 x 128 + a
56-key tail computed as 64, not 128).  A launch covers the query rows ``[ROW_LO, ROW_LO + ROWS)`` of every
tile, so a tile that is not a multiple of ``BLOCK_M`` (Hunyuan's 432 = 3 x 128 + 48) runs its last rows in a
second launch with a smaller block instead of padding them to ``BLOCK_M``.
Text *queries* (``TEXT_QUERIES``) run the same loop, split over the keys: there is about one query block per
head, so the video keys (in tile order: order does not matter for dense attention) are cut into ``SPLITS``
chunks to fill the GPU; each split writes its partial (acc, max, sum) and the launcher merges them
(log-sum-exp); padded text rows output 0.
``USE_TMA`` loads the tile-ordered K/V blocks through Hopper's TMA (host tensor descriptors).
``QUANT`` is the 8-bit path (``vorta/kernels/quantize.py`` makes the copies): Q is quantized to INT8 per row in the
kernel, Q·K runs on INT8 tensor cores, P·V on FP8 ones (V transposed, loaded by TMA in blocks that start at
16-key aligned columns: ``_attend_segment8``), scales applied to the fp32 scores and the accumulator.  Correct on
the H100 (per-head cosine >= 0.9991 against the bf16 kernel) but, in Triton 3.6, still 0.77-0.92x the bf16
kernel's speed (bench/results/2026-11-24-quant-h100.md), so the nodes do not offer it yet.
Non-finite values: a key row outside the current segment never enters a sum.  Masked loads read it as 0; a TMA
tail block reads it unmasked (the next segment, head or batch element), so its score is set to -inf and its
value row to 0 before the dot (a zero weight times inf would be NaN and travel across heads and batches).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .quantize import int8_rows


@triton.jit
def tile_gather_kernel(K, V, KT, VT, PERM, HEADS, TEXT_VALID, skb, sks, skh, svb, svs, svh,
                       n_heads_sel, video_len, kv_len, video_row0, text_row0, BLOCK: tl.constexpr,
                       HEAD_DIM: tl.constexpr, HAS_TEXT_VALID: tl.constexpr):
    """KT/VT[b*h + i, pos] = K/V[b, video_row0 + PERM[pos], HEADS[i]] for the video tokens (tile order), then
    K/V[b, text_row0 + j, HEADS[i]] for the text tokens j in their order; padded text rows are written as
    zeros (padded text is never a key)."""
    pid = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads_sel).to(tl.int64)
    head = tl.load(HEADS + pid_bh % n_heads_sel).to(tl.int64)
    pos = pid * BLOCK + tl.arange(0, BLOCK)
    ok = pos < kv_len
    is_video = pos < video_len
    src = tl.where(is_video, video_row0 + tl.load(PERM + pos, mask=is_video, other=0),
                   text_row0 + pos - video_len).to(tl.int64)[:, None]
    live = ok
    if HAS_TEXT_VALID:
        live = ok & (pos < video_len + tl.load(TEXT_VALID + b))
    d = tl.arange(0, HEAD_DIM)[None, :]
    dst = (pid_bh.to(tl.int64) * kv_len + pos)[:, None] * HEAD_DIM + d
    tl.store(KT + dst, tl.load(K + b * skb + head * skh + src * sks + d, mask=live[:, None], other=0.0),
             mask=ok[:, None])
    tl.store(VT + dst, tl.load(V + b * svb + head * svh + src * svs + d, mask=live[:, None], other=0.0),
             mask=ok[:, None])


@triton.jit
def _attend(q, k, v, m_i, l_i, acc, mask, qk_scale, MASKED: tl.constexpr, SCALE_SCORES: tl.constexpr):
    """One online-softmax step over a key block.  The scale log2(e)/sqrt(D) is in q already, or (``SCALE_SCORES``)
    applied to the fp32 scores: q then stays a shared-memory operand of the dot (measured faster with 128-row
    blocks, slower with 64-row ones; ``sliding_launch.scale_scores``) and is not rounded after scaling.
    Masked key rows are replaced (score -inf, value 0), never multiplied by a zero weight: their data may be
    NaN/inf."""
    s = tl.dot(q, tl.trans(k))
    if MASKED:
        s = tl.where(mask[None, :], s, float("-inf"))
        v = tl.where(mask[:, None], v, 0.0)
    if SCALE_SCORES:
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_new, l_i, acc


@triton.jit
def _load_kv(KT, VT, KT_DESC, VT_DESC, row, offs_n, d, rows_left,
             MASKED: tl.constexpr, USE_TMA: tl.constexpr, HEAD_DIM: tl.constexpr):
    """A block of tile-ordered keys/values starting at buffer row ``row``.  With TMA the load is never masked:
    rows past the segment belong to the next segment, head or batch element (``_attend`` replaces them) or lie
    past the buffer (TMA fills zeros)."""
    if USE_TMA:
        r = row.to(tl.int32)  # TMA coordinates are 32-bit (the launcher checks the row count)
        k = KT_DESC.load([r, 0])
        v = VT_DESC.load([r, 0])
    else:
        kv = (row + offs_n).to(tl.int64)[:, None] * HEAD_DIM + d[None, :]
        if MASKED:
            ok = (offs_n < rows_left)[:, None]
            k = tl.load(KT + kv, mask=ok, other=0.0)
            v = tl.load(VT + kv, mask=ok, other=0.0)
        else:
            k = tl.load(KT + kv)
            v = tl.load(VT + kv)
    return k, v


@triton.jit
def _attend8(q8, sq, k8, sk, vt8, m_i, l_i, acc, mask, MASKED: tl.constexpr, FP8_DOT: tl.constexpr):
    """``_attend`` on 8-bit operands: INT8 Q·K (per-row scales ``sq``, ``sk``) and FP8 P·V (P scaled by 448, V
    transposed [D, N] with per-channel scales applied at the end).  Each block's P·V is added to the fp32
    accumulator outside the tensor-core instruction (two-level accumulation).  Without ``FP8_DOT`` (Triton's
    interpreter, whose FP8 dot is inexact) the same FP8 values are multiplied in fp16, which holds them exactly."""
    s = tl.dot(q8, tl.trans(k8)).to(tl.float32) * sq[:, None] * sk[None, :]
    if MASKED:
        s = tl.where(mask[None, :], s, float("-inf"))
        vt8 = tl.where(mask[None, :], vt8, tl.zeros_like(vt8))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    p8 = (p * 448.0).to(tl.float8e4nv)
    if FP8_DOT:
        pv = tl.dot(p8, tl.trans(vt8))
    else:
        pv = tl.dot(p8.to(tl.float16), tl.trans(vt8).to(tl.float16))
    acc = acc * alpha[:, None] + pv
    return m_new, l_i, acc


@triton.jit
def _load_kv8(KT, SK, VT, KT_DESC, VT_DESC, row, vt_row, col, offs_n, d, ok, kv_pitch,
              MASKED: tl.constexpr, USE_TMA: tl.constexpr, HEAD_DIM: tl.constexpr):
    """``_load_kv`` for the 8-bit copies: K rows (int8) and their scales at buffer row ``row``, and the transposed
    FP8 V block [D, N] at column ``col`` of this head's rows starting at ``vt_row`` (``col`` a multiple of 16:
    TMA needs 16-byte aligned starts along the contiguous dimension).  ``ok``: the block's keys in the segment."""
    sk = tl.load(SK + row + offs_n, mask=ok, other=0.0)
    if USE_TMA:
        k = KT_DESC.load([row.to(tl.int32), 0])
        vt = VT_DESC.load([vt_row.to(tl.int32), col.to(tl.int32)])
    else:
        kv = (row + offs_n).to(tl.int64)[:, None] * HEAD_DIM + d[None, :]
        vv = (vt_row + d).to(tl.int64)[:, None] * kv_pitch + (col + offs_n)[None, :]
        if MASKED:
            k = tl.load(KT + kv, mask=ok[:, None], other=0)
            vt = tl.load(VT + vv, mask=ok[None, :], other=0.0)
        else:
            k = tl.load(KT + kv)
            vt = tl.load(VT + vv)
    return k, sk, vt


@triton.jit
def _attend_segment8(q, sq, m_i, l_i, acc, KT, VT, SK, KT_DESC, VT_DESC, KT_TAIL, VT_TAIL, row0, vt_row, kv_pitch,
                     seg_lo, seg_hi, d, BLOCK_N: tl.constexpr, TAIL_N: tl.constexpr, USE_TMA: tl.constexpr,
                     HEAD_DIM: tl.constexpr, FP8_DOT: tl.constexpr):
    """``_attend_segment`` for the 8-bit copies.  Blocks start at multiples of 16 keys (TMA for V^T): a segment
    that starts unaligned begins with one block from the aligned key below it, its leading keys masked; then
    whole blocks unmasked, then the tail."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, TAIL_N)
    lo = seg_lo - seg_lo % 16
    first = seg_lo
    if lo != seg_lo:  # the leading block: keys [seg_lo, min(lo + BLOCK_N, seg_hi))
        key = lo + offs_n
        ok = (key >= seg_lo) & (key < seg_hi)
        k, sk, vt = _load_kv8(KT, SK, VT, KT_DESC, VT_DESC, row0 + lo, vt_row, lo, offs_n, d, ok, kv_pitch,
                              True, USE_TMA, HEAD_DIM)
        m_i, l_i, acc = _attend8(q, sq, k, sk, vt, m_i, l_i, acc, ok, True, FP8_DOT)
        first = lo + BLOCK_N
    full_end = first + (tl.maximum(seg_hi - first, 0) // BLOCK_N) * BLOCK_N
    for start in range(first, full_end, BLOCK_N):
        k, sk, vt = _load_kv8(KT, SK, VT, KT_DESC, VT_DESC, row0 + start, vt_row, start, offs_n, d,
                              offs_n < BLOCK_N, kv_pitch, False, USE_TMA, HEAD_DIM)
        m_i, l_i, acc = _attend8(q, sq, k, sk, vt, m_i, l_i, acc, offs_n, False, FP8_DOT)
    for start in range(full_end, seg_hi, TAIL_N):
        ok = offs_t < seg_hi - start
        k, sk, vt = _load_kv8(KT, SK, VT, KT_TAIL, VT_TAIL, row0 + start, vt_row, start, offs_t, d, ok, kv_pitch,
                              True, USE_TMA, HEAD_DIM)
        m_i, l_i, acc = _attend8(q, sq, k, sk, vt, m_i, l_i, acc, ok, True, FP8_DOT)
    return m_i, l_i, acc


@triton.jit
def _attend_segment(q, m_i, l_i, acc, KT, VT, KT_DESC, VT_DESC, KT_TAIL, VT_TAIL, row0, seg_lo, seg_hi, d, qk_scale,
                    BLOCK_N: tl.constexpr, TAIL_N: tl.constexpr, USE_TMA: tl.constexpr, HEAD_DIM: tl.constexpr,
                    SCALE_SCORES: tl.constexpr):
    """Keys ``[seg_lo, seg_hi)`` of this (batch, head)'s tile-ordered rows: whole blocks unmasked, then the tail."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, TAIL_N)
    full_end = seg_lo + ((seg_hi - seg_lo) // BLOCK_N) * BLOCK_N
    for start in range(seg_lo, full_end, BLOCK_N):
        k, v = _load_kv(KT, VT, KT_DESC, VT_DESC, row0 + start, offs_n, d, BLOCK_N, False, USE_TMA, HEAD_DIM)
        m_i, l_i, acc = _attend(q, k, v, m_i, l_i, acc, offs_n, qk_scale, False, SCALE_SCORES)
    for start in range(full_end, seg_hi, TAIL_N):
        k, v = _load_kv(KT, VT, KT_TAIL, VT_TAIL, row0 + start, offs_t, d, seg_hi - start, True, USE_TMA, HEAD_DIM)
        m_i, l_i, acc = _attend(q, k, v, m_i, l_i, acc, offs_t < seg_hi - start, qk_scale, True, SCALE_SCORES)
    return m_i, l_i, acc


@triton.jit
def sliding_tile_fwd_kernel(
    Q, KT, VT, KT_DESC, VT_DESC, KT_TAIL, VT_TAIL, O, HEADS, TILE_START, TEXT_VALID, WS_ACC, WS_M, WS_L, SK, VS,
    sqb, sqs, sqh, sob, sos, soh, kv_pitch,
    n_heads_sel, qk_scale,
    GF, GH, GW, NF, NH, NW, VIDEO_LEN, TEXT_LEN, VIDEO_ROW0, TEXT_ROW0, SPLITS, SPLIT_CHUNK,
    TF: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    RF: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr, ROW_LO: tl.constexpr, ROWS: tl.constexpr,
    HAS_TEXT: tl.constexpr, HAS_TEXT_VALID: tl.constexpr, TEXT_QUERIES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TAIL_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    USE_TMA: tl.constexpr, QUANT: tl.constexpr, FP8_DOT: tl.constexpr, SCALE_SCORES: tl.constexpr,
):
    Q_BLOCKS: tl.constexpr = (ROWS + BLOCK_M - 1) // BLOCK_M
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads_sel).to(tl.int64)
    head = tl.load(HEADS + pid_bh % n_heads_sel).to(tl.int64)
    d = tl.arange(0, HEAD_DIM)
    if HAS_TEXT_VALID:  # clamped: even an unchecked value cannot move a load past this head's rows
        text_valid = tl.minimum(tl.maximum(tl.load(TEXT_VALID + b), 0), TEXT_LEN)
    else:
        text_valid = TEXT_LEN
    if TEXT_QUERIES:  # text rows: dense over every video key and the valid text, split over the keys
        split = pid_m % SPLITS
        t_row = (pid_m // SPLITS) * BLOCK_M + tl.arange(0, BLOCK_M)
        q_ok = t_row < TEXT_LEN
        q_live = t_row < text_valid
        q_idx = (TEXT_ROW0 + t_row).to(tl.int64)[:, None]
        n_video = 1
        text_end = tl.where(split == 0, text_valid, 0)  # text keys are taken by the first split only
        f_lo = 0
        h_lo = 0
        w_lo = 0
        w_hi = 0
        n_seg_h = 1
    else:
        tile = pid_m // Q_BLOCKS
        q_block = pid_m % Q_BLOCKS
        ta = tile // (NH * NW)
        tb = (tile // NW) % NH
        tc = tile % NW
        slot = ROW_LO + q_block * BLOCK_M + tl.arange(0, BLOCK_M)
        f = ta * TF + slot // (TH * TW)
        y = tb * TH + (slot // TW) % TH
        x = tc * TW + slot % TW
        q_ok = (slot < ROW_LO + ROWS) & (f < GF) & (y < GH) & (x < GW)
        q_live = q_ok
        q_idx = (VIDEO_ROW0 + (f * GH + y) * GW + x).to(tl.int64)[:, None]
        text_end = text_valid
        # Window of key tiles around the clamped center (torch.clamp semantics: min > max gives max).
        cf = tl.minimum(tl.maximum(ta, RF), NF - 1 - RF)
        ch = tl.minimum(tl.maximum(tb, RH), NH - 1 - RH)
        cw = tl.minimum(tl.maximum(tc, RW), NW - 1 - RW)
        f_lo = tl.maximum(cf - RF, 0)
        h_lo = tl.maximum(ch - RH, 0)
        w_lo = tl.maximum(cw - RW, 0)
        w_hi = tl.minimum(cw + RW, NW - 1)
        n_seg_h = tl.minimum(ch + RH, NH - 1) - h_lo + 1
        n_video = (tl.minimum(cf + RF, NF - 1) - f_lo + 1) * n_seg_h
        # A block whose first row lies past the last frame (ragged last frame-tile) has no rows: skip its work.
        n_video = tl.where(ta * TF + (ROW_LO + q_block * BLOCK_M) // (TH * TW) < GF, n_video, 0)
    q = tl.load(Q + b * sqb + head * sqh + q_idx * sqs + d[None, :], mask=q_live[:, None], other=0.0)
    if QUANT:  # INT8 with one scale per query row (a non-finite row's scale is NaN: the row stays NaN)
        q, sq = int8_rows(q.to(tl.float32) * qk_scale, q_live)
    elif not SCALE_SCORES:
        q = (q * qk_scale).to(q.dtype)

    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: an all-masked block leaves the state intact
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    row0 = pid_bh.to(tl.int64) * (VIDEO_LEN + TEXT_LEN)  # this (batch, head)'s rows of the tile-ordered K/V
    vt_row = pid_bh.to(tl.int64) * HEAD_DIM  # ... and of the transposed 8-bit V
    n_segments = n_video
    if HAS_TEXT:
        n_segments = tl.where(n_video > 0, n_video + 1, 0)  # the valid text is the last segment
    for r in range(0, n_segments):
        if TEXT_QUERIES:  # this split's share of every video key (order does not matter for dense attention)
            seg_lo = split * SPLIT_CHUNK
            seg_hi = tl.minimum(seg_lo + SPLIT_CHUNK, VIDEO_LEN)
        else:  # one contiguous segment per (frame-tile, row-tile) of the window
            in_video = r < n_video
            row = (f_lo + r // n_seg_h) * NH + h_lo + r % n_seg_h
            seg_lo = tl.load(TILE_START + row * NW + w_lo, mask=in_video, other=0)
            seg_hi = tl.load(TILE_START + row * NW + w_hi + 1, mask=in_video, other=0)
        if HAS_TEXT:
            seg_lo = tl.where(r < n_video, seg_lo, VIDEO_LEN)
            seg_hi = tl.where(r < n_video, seg_hi, VIDEO_LEN + text_end)
        if QUANT:
            m_i, l_i, acc = _attend_segment8(q, sq, m_i, l_i, acc, KT, VT, SK, KT_DESC, VT_DESC, KT_TAIL, VT_TAIL,
                                             row0, vt_row, kv_pitch, seg_lo, seg_hi, d, BLOCK_N, TAIL_N, USE_TMA,
                                             HEAD_DIM, FP8_DOT)
        else:
            m_i, l_i, acc = _attend_segment(q, m_i, l_i, acc, KT, VT, KT_DESC, VT_DESC, KT_TAIL, VT_TAIL, row0,
                                            seg_lo, seg_hi, d, qk_scale, BLOCK_N, TAIL_N, USE_TMA, HEAD_DIM,
                                            SCALE_SCORES)
    if QUANT:  # undo P's 448 and V's per-channel scales
        acc = acc * (tl.load(VS + vt_row + d) / 448.0)[None, :]

    if TEXT_QUERIES:  # partial results of this split; the launcher merges the splits
        ws = (split * tl.num_programs(1) + pid_bh).to(tl.int64) * TEXT_LEN + t_row
        tl.store(WS_ACC + ws[:, None] * HEAD_DIM + d[None, :], acc, mask=q_ok[:, None])
        tl.store(WS_M + ws, m_i, mask=q_ok)
        tl.store(WS_L + ws, l_i, mask=q_ok)
    else:
        o_ptr = O + b * sob + head * soh + q_idx * sos + d[None, :]
        l_i = tl.where(l_i == 0, 1.0, l_i)  # all scores -inf: every weight is 0, the output is 0 * V (as in SDPA)
        tl.store(o_ptr, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=q_ok[:, None])
