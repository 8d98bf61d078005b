"""Fused sliding tile attention (forward), one launch for all routed heads.

Equals ``vorta.reference.sliding_tile_attention`` (video queries) for any grid, tile and window.

Layout: q/k/v/out are ``[B, S, H, D]`` views with any strides (Wan's ``[B, L, H*D]`` viewed, Hunyuan's
``[B, H, L, D]`` transposed), video tokens in raster order first, then text.  No permuted copies are made:
each program owns one block of one query tile, computes the raster address of every row from its tile
coordinates, and walks the key tiles of its clamped window as one flat "virtual" key sequence
(window tile after window tile, slots in tile-local raster order), so key blocks run across tile
boundaries and only the end of the sequence is a partial block.  Padded slots of partial border tiles
(ragged grids) are masked.  Valid text keys are appended to every video query's key sequence; text
*queries* (dense over everything) are computed by the launcher with SDPA.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _token_address(slot, tf0, th0, tw0, GF, GH, GW, TF: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """Raster index and validity of tile-local slots of the tile starting at (tf0, th0, tw0)."""
    f = tf0 + slot // (TH * TW)
    y = th0 + (slot // TW) % TH
    x = tw0 + slot % TW
    ok = (f < GF) & (y < GH) & (x < GW)
    return (f * GH + y) * GW + x, ok


@triton.jit
def sliding_tile_fwd_kernel(
    Q, K, V, O, HEADS, TEXT_VALID,
    sqb, sqs, sqh, skb, sks, skh, svb, svs, svh, sob, sos, soh,
    n_heads_sel, qk_scale,
    GF, GH, GW, NF, NH, NW, VIDEO_LEN, TEXT_LEN,
    TF: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    RF: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr,
    HAS_TEXT_VALID: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    P: tl.constexpr = TF * TH * TW
    Q_BLOCKS: tl.constexpr = (P + BLOCK_M - 1) // BLOCK_M
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_heads_sel
    head = tl.load(HEADS + pid_bh % n_heads_sel).to(tl.int64)
    tile = pid_m // Q_BLOCKS
    q_block = pid_m % Q_BLOCKS
    ta = tile // (NH * NW)
    tb = (tile // NW) % NH
    tc = tile % NW

    d = tl.arange(0, HEAD_DIM)
    q_slot = q_block * BLOCK_M + tl.arange(0, BLOCK_M)
    q_idx, q_ok = _token_address(q_slot, ta * TF, tb * TH, tc * TW, GF, GH, GW, TF, TH, TW)
    q_ok = q_ok & (q_slot < P)
    q_ptr = Q + b.to(tl.int64) * sqb + head * sqh + q_idx.to(tl.int64)[:, None] * sqs + d[None, :]
    q = tl.load(q_ptr, mask=q_ok[:, None], other=0.0)

    # Window of key tiles around the clamped center (torch.clamp semantics: min > max gives max).
    cf = tl.minimum(tl.maximum(ta, RF), NF - 1 - RF)
    ch = tl.minimum(tl.maximum(tb, RH), NH - 1 - RH)
    cw = tl.minimum(tl.maximum(tc, RW), NW - 1 - RW)
    f_lo = tl.maximum(cf - RF, 0)
    h_lo = tl.maximum(ch - RH, 0)
    w_lo = tl.maximum(cw - RW, 0)
    n_f = tl.minimum(cf + RF, NF - 1) - f_lo + 1
    n_h = tl.minimum(ch + RH, NH - 1) - h_lo + 1
    n_w = tl.minimum(cw + RW, NW - 1) - w_lo + 1
    n_virtual = n_f * n_h * n_w * P

    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: an all-masked block leaves the state intact
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + b.to(tl.int64) * skb + head * skh
    v_base = V + b.to(tl.int64) * svb + head * svh

    for start in range(0, n_virtual, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        wt = j // P
        slot = j % P
        kw = w_lo + wt % n_w
        kh = h_lo + (wt // n_w) % n_h
        kf = f_lo + wt // (n_w * n_h)
        k_idx, k_ok = _token_address(slot, kf * TF, kh * TH, kw * TW, GF, GH, GW, TF, TH, TW)
        k_ok = k_ok & (j < n_virtual)
        k_off = k_idx.to(tl.int64)[:, None]
        k = tl.load(k_base + k_off * sks + d[None, :], mask=k_ok[:, None], other=0.0)
        v = tl.load(v_base + k_off * svs + d[None, :], mask=k_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(k_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if HAS_TEXT_VALID:
        text_valid = tl.load(TEXT_VALID + b)
    else:
        text_valid = TEXT_LEN
    for start in range(0, text_valid, BLOCK_N):
        t = start + tl.arange(0, BLOCK_N)
        t_ok = t < text_valid
        t_off = (VIDEO_LEN + t).to(tl.int64)[:, None]
        k = tl.load(k_base + t_off * sks + d[None, :], mask=t_ok[:, None], other=0.0)
        v = tl.load(v_base + t_off * svs + d[None, :], mask=t_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    out = acc / l_i[:, None]
    o_ptr = O + b.to(tl.int64) * sob + head * soh + q_idx.to(tl.int64)[:, None] * sos + d[None, :]
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=q_ok[:, None])
