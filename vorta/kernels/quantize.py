"""8-bit K/V for the sparse kernels: statistics and the quantizing tile-order gather.

Equals the PyTorch reference ``vorta.quantization`` (``quantize_keys``, ``quantize_values``; ``quantize_rows_int8``
for ``int8_rows``).  Per (batch, routed head):
* K is smoothed (the mean key over the video and valid text rows is subtracted: every score of a query moves by
  the same amount, so softmax is unchanged) and quantized to INT8 with one scale per key row;
* V is quantized to FP8 (e4m3) with one scale per channel and stored transposed ([D, keys], keys contiguous):
  Hopper's FP8 tensor-core instructions take the P·V operand K-major.
Statistics ignore non-finite values, so a NaN or inf token changes no other token's scale; the token itself is
NaN in the 8-bit copy (its K row's scale, its V values), so it shows wherever dense attention would see it.
"""
from __future__ import annotations

import triton
import triton.language as tl

FP8_MAX: tl.constexpr = tl.constexpr(448.0)  # largest finite e4m3 value
INT8_MAX: tl.constexpr = tl.constexpr(127.0)


@triton.jit
def int8_rows(x, live):
    """INT8 values and one fp32 scale per row of ``x`` [N, D] (fp32), rounding half away from zero (the
    reference's ``quantize_rows_int8``): rows with ``live`` false become 0 with scale 0; a live row holding NaN or
    inf gets scale NaN (its finite values are still quantized), so it stays non-finite downstream."""
    finite = tl.abs(x) < float("inf")  # false for NaN and inf
    x = tl.where(finite & live[:, None], x, 0.0)
    amax = tl.max(tl.abs(x), 1)
    bad = tl.sum((~finite & live[:, None]).to(tl.int32), 1) > 0
    scale = tl.where(bad, float("nan"), amax / INT8_MAX)
    x = x * tl.where(amax > 0, INT8_MAX / amax, 0.0)[:, None]  # a zero row stays zero
    return tl.where(x >= 0, x + 0.5, x - 0.5).to(tl.int8), scale


@triton.jit
def _block_rows(PERM, HEADS, TEXT_VALID, n_heads_sel, video_len, kv_len, video_row0, text_row0,
                BLOCK: tl.constexpr, HAS_TEXT_VALID: tl.constexpr):
    """This program's batch element, head and tile-order positions; each position's sequence row and whether it
    is a position (``ok``) and a real key (``live``: video, or valid text)."""
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads_sel).to(tl.int64)
    head = tl.load(HEADS + pid_bh % n_heads_sel).to(tl.int64)
    pos = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = pos < kv_len
    is_video = pos < video_len
    src = tl.where(is_video, video_row0 + tl.load(PERM + pos, mask=is_video, other=0), text_row0 + pos - video_len)
    live = ok
    if HAS_TEXT_VALID:
        live = ok & (pos < video_len + tl.load(TEXT_VALID + b))
    return b, head, pos, src.to(tl.int64)[:, None], ok, live


@triton.jit
def kv_stats_kernel(K, V, PERM, HEADS, TEXT_VALID, KSUM, KCNT, VMAX, skb, sks, skh, svb, svs, svh,
                    n_heads_sel, video_len, kv_len, video_row0, text_row0,
                    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_TEXT_VALID: tl.constexpr):
    """Per block of positions: the sum and count of finite K values and the largest finite |V| per channel."""
    b, head, pos, src, ok, live = _block_rows(PERM, HEADS, TEXT_VALID, n_heads_sel, video_len, kv_len, video_row0,
                                              text_row0, BLOCK, HAS_TEXT_VALID)
    d = tl.arange(0, HEAD_DIM)[None, :]
    k = tl.load(K + b * skb + head * skh + src * sks + d, mask=live[:, None], other=0.0).to(tl.float32)
    v = tl.load(V + b * svb + head * svh + src * svs + d, mask=live[:, None], other=0.0).to(tl.float32)
    k_ok = (tl.abs(k) < float("inf")) & live[:, None]  # false for NaN and inf
    v_ok = tl.abs(v) < float("inf")
    out = (tl.program_id(0).to(tl.int64) * tl.num_programs(1) + tl.program_id(1)) * HEAD_DIM + tl.arange(0, HEAD_DIM)
    tl.store(KSUM + out, tl.sum(tl.where(k_ok, k, 0.0), 0))
    tl.store(KCNT + out, tl.sum(k_ok.to(tl.float32), 0))
    tl.store(VMAX + out, tl.max(tl.where(v_ok, tl.abs(v), 0.0), 0))


@triton.jit
def kv_quant_gather_kernel(K, V, KQ, SK, VQ, PERM, HEADS, TEXT_VALID, KMEAN, VSCALE,
                           skb, sks, skh, svb, svs, svh, n_heads_sel, video_len, kv_len, kv_pitch,
                           video_row0, text_row0,
                           BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_TEXT_VALID: tl.constexpr):
    """KQ[bh, pos] (int8) and SK[bh, pos] (fp32) for K, VQ[bh, :, pos] (fp8, rows of ``kv_pitch``) for V, at the
    tile-order positions of ``tile_gather_kernel``; padded text rows are written as zeros with scale 0."""
    b, head, pos, src, ok, live = _block_rows(PERM, HEADS, TEXT_VALID, n_heads_sel, video_len, kv_len, video_row0,
                                              text_row0, BLOCK, HAS_TEXT_VALID)
    pid_bh = tl.program_id(1)
    dd = tl.arange(0, HEAD_DIM)
    d = dd[None, :]
    stat = pid_bh.to(tl.int64) * HEAD_DIM + dd
    k = tl.load(K + b * skb + head * skh + src * sks + d, mask=live[:, None], other=0.0).to(tl.float32)
    kq, scale = int8_rows(k - tl.load(KMEAN + stat)[None, :], live)  # a non-finite key row scores NaN, as dense
    row = pid_bh.to(tl.int64) * kv_len + pos
    tl.store(KQ + row[:, None] * HEAD_DIM + d, kq, mask=ok[:, None])
    tl.store(SK + row, scale, mask=ok)
    v = tl.load(V + b * svb + head * svh + src * svs + d, mask=live[:, None], other=0.0).to(tl.float32)
    vq = tl.where(tl.abs(v) < float("inf"), v / tl.load(VSCALE + stat)[None, :], float("nan"))
    vq = vq.to(tl.float8e4nv)  # NaN stays NaN (e4m3 has no inf, and the cast would saturate an inf to 448)
    vt = (pid_bh.to(tl.int64) * HEAD_DIM + dd)[None, :] * kv_pitch + pos[:, None]  # transposed: [D, keys]
    tl.store(VQ + vt, vq, mask=ok[:, None])
