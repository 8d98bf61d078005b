"""Reference branches in plain PyTorch: the oracles every kernel is tested against.

All functions take head-split tensors ``[B, h, S, D]`` with ``S = L + T``: the ``L`` video tokens of the
grid in raster order, then ``T`` text tokens (HunyuanVideo; ``T = 0`` for Wan), or with ``text_first`` the
text tokens first (HunyuanVideo in ComfyUI >= 0.13).  ``text_valid`` gives the number of valid (unpadded) text
tokens per batch element, counted from the first text token (``None``: all valid).  Text rules (spec §4.4,
§6.3-6.4): valid text is seen by every query and sees every key; padded text is never a key and its
query rows output 0.  Results are returned in the input dtype.

Non-finite values: a padded or out-of-window token never takes part in any sum (its rows are replaced, not
multiplied by a zero weight, since 0 * inf = NaN), so NaN/inf reach exactly the outputs whose attention
reads them.  Where that attention is computed (``sdpa``): on the CPU by the math definition; on a GPU by
PyTorch's SDPA, whose backends do not follow the definition for non-finite input (on the H100, torch 2.11: in
fp32 a query with one -inf score outputs NaN where the definition weighs that key 0; in bf16 a query whose
unmasked scores are all -inf outputs NaN where the definition gives 0).
So on a GPU the full branch and the coreset's attention on the pooled sequence (``pooled_attention``, the same
call in this reference and in the Triton launcher) put NaN/inf where that SDPA puts them, always inside the
(batch element, head) whose inputs hold them (SDPA never mixes them).  The Triton kernels' own math (sliding
tile attention; coreset selection, pooling, unpooling) follows the definition on every device; this
reference's sliding branch on a GPU (the kernel's fallback when no launch config fits) runs through SDPA too.
Coreset selection uses one total order, shared with the kernels (``coreset_select``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .geometry import BucketLayout, TileLayout, TokenGrid, Triple, key_tile_table

_CHUNK_ELEMENTS = 1 << 26  # keys (and scores) per sliding-reference chunk: bounds CPU memory at any size


def text_key_mask(batch: int, text_len: int, text_valid: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
    """(B, T) bool: which text tokens are valid keys, or None when every text token is valid."""
    if text_len == 0 or text_valid is None:
        return None
    valid = torch.as_tensor(text_valid, device=device).reshape(-1, 1)
    return (torch.arange(text_len, device=device)[None, :] < valid).expand(batch, text_len)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(QK^T/sqrt(D))V: ``F.scaled_dot_product_attention`` on a GPU (fast; its backends place NaN/inf
    their own way), the definition itself (``attention_definition``) on the CPU."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attention_definition(q, k, v, mask)


def attention_definition(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(QK^T/sqrt(D))V written out in fp32, on any device.

    Why not PyTorch's SDPA: its CPU kernels do not follow the definition for non-finite values (without a mask a
    query row holding NaN outputs 0; in fp16 an inf key can vanish), nor do its GPU backends (see the module
    docstring), and the oracle must.  By the definition NaN/inf propagate, and a query whose scores are all -inf
    weighs every key 0 (PyTorch's safe softmax): it outputs 0 times its values.  The Triton kernels follow the
    same definition."""
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1)
    p = torch.where((s == float("-inf")).all(-1, keepdim=True), 0.0, p)
    return (p @ v.float()).to(q.dtype)


try:  # SDPA backend priority (torch >= 2.6); None on older torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH]
except ImportError:  # pragma: no cover
    _CUDNN_FIRST = None


def sdpa_cudnn_first(device):
    """SDPA backend priority for the coreset's pooled attention on a GPU: cuDNN first (~1.6x FlashAttention-2 on
    Hopper; fp32, which neither supports, runs the memory-efficient kernel).

    Without it the backend depends on global state: after ComfyUI's own attention (which sets a cuDNN-first
    priority only inside its call) PyTorch falls back to FlashAttention-2 for our call, measured at 9.3 vs 5.8 ms
    per Wan-1.3B layer in a real ComfyUI run.  One explicit priority also makes the reference and the kernel
    launcher run the same backend, so NaN/inf land in the same places."""
    if _CUDNN_FIRST is None or torch.device(device).type == "cpu":
        return contextlib.nullcontext()
    try:
        return sdpa_kernel(_CUDNN_FIRST, set_priority=True)
    except TypeError:  # pragma: no cover - torch without set_priority
        return contextlib.nullcontext()


def pooled_attention(qp: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, text_len: int = 0,
                     text_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Attention over a pooled coreset sequence ``[kept video rows, text_len text rows]`` (B, h, P + T, D), every
    query over every pooled video row and batch element i's first ``text_valid[i]`` text rows.  The keys are cut
    there per batch element (as the official code does) rather than masked, so a GPU runs its unmasked backends,
    cuDNN first (``sdpa_cudnn_first``).  Padded text queries' rows are left as computed (callers zero them).

    The one function for ``coreset_attention`` below and the Triton launcher (``kernels/coreset_launch.py``):
    both hand it the same rows in the same order, so on a GPU both get the same SDPA backend's answer, non-finite
    values included."""
    with sdpa_cudnn_first(qp.device):
        if text_valid is None or text_len == 0:
            return sdpa(qp, kp, vp)
        n_video = qp.shape[2] - text_len
        out = torch.empty_like(qp)
        for i, n in enumerate(torch.as_tensor(text_valid).tolist()):
            n_keys = n_video + int(n)
            out[i:i + 1] = sdpa(qp[i:i + 1], kp[i:i + 1, :, :n_keys], vp[i:i + 1, :, :n_keys])
    return out


def _zero_padded_text_rows(x: torch.Tensor, video_len: int, text_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Padded text rows of ``x`` (B, h, L + T, D) set to 0 (replaced, so NaN/inf there cannot survive)."""
    if text_mask is not None:
        x = x.clone()
        x[:, :, video_len:] = torch.where(text_mask[:, None, :, None], x[:, :, video_len:], 0)
    return x


def text_last(x: torch.Tensor, text_len: int, text_first: bool) -> torch.Tensor:
    """``[text, video]`` rows (dim 2) reordered to ``[video, text]`` (a copy); unchanged when text is last."""
    if not text_first or not text_len:
        return x
    return torch.cat([x[:, :, text_len:], x[:, :, :text_len]], 2)


def text_back(out: torch.Tensor, text_len: int, text_first: bool) -> torch.Tensor:
    """Inverse of ``text_last`` for an output computed in ``[video, text]`` order."""
    if not text_first or not text_len:
        return out
    return torch.cat([out[:, :, -text_len:], out[:, :, :-text_len]], 2)


def full_attention(q, k, v, text_len: int = 0, text_valid: Optional[torch.Tensor] = None,
                   text_first: bool = False) -> torch.Tensor:
    """Branch 0: softmax(QK^T/sqrt(D))V over [video; valid text]."""
    q, k, v = (text_last(x, text_len, text_first) for x in (q, k, v))
    B, _, S, _ = q.shape
    tmask = text_key_mask(B, text_len, text_valid, q.device)
    mask = None
    if tmask is not None:
        mask = torch.cat([torch.ones(B, S - text_len, dtype=torch.bool, device=q.device), tmask], 1)[:, None, None, :]
        k, v = (_zero_padded_text_rows(x, S - text_len, tmask) for x in (k, v))  # never keys, not even 0 * NaN
    out = sdpa(q, k, v, mask)
    return text_back(_zero_padded_text_rows(out, S - text_len, tmask), text_len, text_first)


def sliding_tile_attention(
    q, k, v, grid: TokenGrid, tile: Triple, window: Triple, text_len: int = 0, text_valid: Optional[torch.Tensor] = None,
    text_first: bool = False,
) -> torch.Tensor:
    """Branch 2: each video query sees the key tiles of its (clamped) window plus valid text; text queries
    see everything.  Works tile-chunk by tile-chunk by gathering each query tile's key tiles, so it never
    builds an L x L mask."""
    q, k, v = (text_last(x, text_len, text_first) for x in (q, k, v))
    B, h, S, D = q.shape
    L = grid.numel
    if S != L + text_len:
        raise ValueError(f"sequence length {S} != grid {grid.shape} ({L} tokens) + {text_len} text tokens")
    layout = TileLayout(grid, tile)
    slots = layout.tile_token_index().to(q.device)  # (nT, P) raster index or -1
    table = key_tile_table(grid, tuple(tile), tuple(window)).to(q.device)  # (nT, W) key tiles or -1
    n_tiles, P = slots.shape
    tmask = text_key_mask(B, text_len, text_valid, q.device)
    k, v = (_zero_padded_text_rows(x, L, tmask) for x in (k, v))  # padded text: never keys, not even 0 * NaN

    def padded(x):  # one extra zero row at index L stands in for padded slots
        return torch.cat([x[:, :, :L], x.new_zeros(B, h, 1, D)], 2)

    qp, kp, vp = padded(q), padded(k), padded(v)
    safe_slots = torch.where(slots < 0, torch.full_like(slots, L), slots)
    out = q.new_empty(B, h, S, D)
    per_tile = table.shape[1] * P + text_len
    chunk = max(1, _CHUNK_ELEMENTS // max(1, B * h * per_tile * max(D, P)))  # gathered keys and scores
    for start in range(0, n_tiles, chunk):
        tiles = torch.arange(start, min(start + chunk, n_tiles), device=q.device)
        key_tiles = table[tiles]  # (c, W)
        key_slots = slots[key_tiles.clamp(min=0)]  # (c, W, P)
        key_ok = (key_tiles[..., None] >= 0) & (key_slots >= 0)
        key_idx = torch.where(key_ok, key_slots, torch.full_like(key_slots, L)).flatten(1)  # (c, W*P)
        qi = qp[:, :, safe_slots[tiles]]  # (B, h, c, P, D)
        ki, vi = kp[:, :, key_idx], vp[:, :, key_idx]  # (B, h, c, W*P, D)
        mask = key_ok.flatten(1)[None, None, :, None, :].expand(B, 1, -1, 1, -1)  # (B, 1, c, 1, W*P)
        if text_len:
            c = tiles.numel()
            ki = torch.cat([ki, k[:, :, None, L:].expand(B, h, c, text_len, D)], 3)
            vi = torch.cat([vi, v[:, :, None, L:].expand(B, h, c, text_len, D)], 3)
            tm = torch.ones(B, text_len, dtype=torch.bool, device=q.device) if tmask is None else tmask
            mask = torch.cat([mask, tm[:, None, None, None, :].expand(B, 1, c, 1, text_len)], 4)
        oi = sdpa(qi, ki, vi, mask)  # (B, h, c, P, D)
        valid = slots[tiles] >= 0
        out[:, :, slots[tiles][valid]] = oi[:, :, valid]
    if text_len:
        out[:, :, L:] = full_attention(q, k, v, text_len, text_valid)[:, :, L:]
    return text_back(out, text_len, text_first)


# Similarity key of a margin whose similarity is NaN: after every cosine (all lie in [-1, 1] up to rounding),
# before the slots that are not margins (+inf).  Shared with vorta/kernels/coreset.py.
NAN_SIMILARITY_KEY = 3.0


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / max(|x|, 1e-12) over the last dim in fp32, written out as the coreset kernel computes it."""
    x = x.float()
    return x / torch.sqrt((x * x).sum(-1, keepdim=True)).clamp_min(1e-12)


def coreset_select(x: torch.Tensor, layout: BucketLayout) -> torch.Tensor:
    """(B, h, P) raster indices of the kept tokens of ``x`` (B, h, L, D), in the official pooled order:
    all bucket centers in bucket order, then each bucket's kept margins, least similar to the center first.

    The tie rule (one total order, shared with ``vorta/kernels/coreset.py``): margins are ordered by (similarity,
    slot) ascending, where the similarity is the fp32 cosine with the center and a NaN similarity counts as
    larger than every number (NaN/inf tokens are pruned first and copy their center); the center and the
    padding slots of a partial bucket are never ranked.  The official code computes in bf16 with an unstable
    sort, where ties are frequent and broken arbitrarily."""
    B, h, L, D = x.shape
    members = layout.members().to(x.device)  # (G, Bk) raster index or -1
    center_slot = layout.center_slot().to(x.device)  # (G,)
    keep = layout.keep_count().to(x.device)  # (G,)
    G, Bk = members.shape
    xn = unit_rows(x)
    xb = xn[:, :, members.clamp(min=0)]  # (B, h, G, Bk, D)
    center_idx = members.gather(1, center_slot[:, None]).squeeze(1)  # (G,)
    sim = (xb * xn[:, :, center_idx, None, :]).sum(-1)  # (B, h, G, Bk)
    sim = torch.where(torch.isnan(sim), torch.full_like(sim, NAN_SIMILARITY_KEY), sim)
    excluded = (members < 0) | (torch.arange(Bk, device=x.device)[None, :] == center_slot[:, None])
    sim = sim.masked_fill(excluded, float("inf"))
    order = torch.argsort(sim, dim=-1, stable=True)  # margins, least similar first; ties: lower slot first
    take = (torch.arange(Bk, device=x.device)[None, :] < keep[:, None]).flatten()  # (G*Bk,) same for all b,h
    kept_slots = order.flatten(2)[:, :, take]  # (B, h, sum k)
    bucket_of = torch.arange(G, device=x.device).repeat_interleave(keep)  # (sum k,)
    kept_raster = members[bucket_of[None, None, :].expand_as(kept_slots), kept_slots]
    return torch.cat([center_idx.expand(B, h, G), kept_raster], 2)


def coreset_unpool_source(kept_q: torch.Tensor, layout: BucketLayout) -> torch.Tensor:
    """(B, h, L) pooled row each video token takes its output from: its own row if kept, else its bucket
    center's row (centers are pooled rows 0..G-1)."""
    B, h, _ = kept_q.shape
    G = layout.num_buckets
    members = layout.members().to(kept_q.device)
    bucket_of_token = torch.empty(layout.grid.numel, dtype=torch.long, device=kept_q.device)
    valid = members >= 0
    bucket_of_token[members[valid]] = torch.arange(G, device=kept_q.device)[:, None].expand_as(members)[valid]
    src = bucket_of_token.expand(B, h, -1).clone()
    pos = torch.arange(kept_q.shape[2], device=kept_q.device).expand(B, h, -1)
    src.scatter_(2, kept_q[:, :, G:], pos[:, :, G:])
    return src


def coreset_attention(
    q, k, v, grid: TokenGrid, bucket: Triple, ratio: float, kv_from: str = "query",
    text_len: int = 0, text_valid: Optional[torch.Tensor] = None, text_first: bool = False,
) -> torch.Tensor:
    """Branch 1: bucketed coreset attention.  ``kv_from="query"`` reuses Q's kept set for K/V (Wan);
    ``"key"`` selects K by K's own similarity and V with K's set (HunyuanVideo).  Text tokens are not
    pooled; pruned video tokens copy their bucket center's output."""
    q, k, v = (text_last(x, text_len, text_first) for x in (q, k, v))
    B, h, S, D = q.shape
    L = grid.numel
    if S != L + text_len:
        raise ValueError(f"sequence length {S} != grid {grid.shape} ({L} tokens) + {text_len} text tokens")
    if kv_from not in ("query", "key"):
        raise ValueError(f"kv_from must be 'query' (Wan) or 'key' (HunyuanVideo), got {kv_from!r}")
    layout = BucketLayout(grid, tuple(bucket), ratio)
    kept_q = coreset_select(q[:, :, :L], layout)
    kept_k = kept_q if kv_from == "query" else coreset_select(k[:, :, :L], layout)

    def gather(x, idx):
        return x.gather(2, idx[..., None].expand(-1, -1, -1, D))

    qp, kp, vp = gather(q, kept_q), gather(k, kept_k), gather(v, kept_k)
    if text_len:
        qp, kp, vp = (torch.cat([a, x[:, :, L:]], 2) for a, x in ((qp, q), (kp, k), (vp, v)))
    pooled = pooled_attention(qp, kp, vp, text_len, text_valid)  # (B, h, P + T, D)
    src = coreset_unpool_source(kept_q, layout)
    out = q.new_empty(B, h, S, D)
    out[:, :, :L] = gather(pooled, src)
    if text_len:
        out[:, :, L:] = pooled[:, :, -text_len:]
    out = _zero_padded_text_rows(out, L, text_key_mask(B, text_len, text_valid, q.device))
    return text_back(out, text_len, text_first)
