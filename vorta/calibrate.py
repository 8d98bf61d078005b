"""Calibration measurement: how far each sparse branch's attention output is from full attention, per head.

The metric (documented in the README, *Calibrating a router*): for one self-attention call, head ``h`` and branch
``b`` (coreset or sliding), over a sample ``R`` of video query rows,

    err_sq[b, h] = sum over batch elements, rows in R, channels of (O_b - O_full)^2
    ref_sq[h]    = sum over the same of O_full^2

where ``O`` is the per-head attention output softmax(QK^T/sqrt(D))V before the output projection, computed on the
call's actual q/k/v.  Sums (not ratios) are returned so that calls can be pooled: the calibrated error of a
(timestep, layer, head) is ``sqrt(sum err_sq / sum ref_sq)`` over every call at that timestep -- the CFG batch
(cond and uncond, batched or not), every latent of the batch and every prompt -- a relative L2 error of the
attention output.  Full attention has error 0 by definition.

Why a sample: computing every branch on every query would triple the attention cost.  ``R`` is a set of whole
sliding tiles (a query tile shares its key window), spread evenly over the grid with an offset that moves with
``salt`` (layer and timestep), so different calls cover different tiles.  For a fraction ``f`` of the tiles, the
measurement costs ``f * (kept share + sliding density)`` of one dense attention (about ``0.64 f`` at the official
720p settings: each sampled query sees half the keys in the coreset branch and 13.5 % in the sliding one), plus the
coreset selection over the whole grid (O(L*bucket*D)) -- and no full attention at all when the caller hands in the
dense output it computed anyway (``full_out``).  Text query rows
(HunyuanVideo) are not measured: their sliding rows are exact and they are a small share of the rows; text keys
are included for every video query exactly as each branch attends to them.

Memory is bounded by working on a few heads and tiles at a time (``max_elements`` per gathered tensor), so a
calibrated step needs little more memory than a dense one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch

from .config import CORESET, FULL, SLIDING
from .geometry import BucketLayout, TileLayout, key_tile_table
from .reference import coreset_select, coreset_unpool_source, sdpa, text_key_mask
from .routing import AttentionProblem

DEFAULT_FRACTION = 0.125
MAX_ELEMENTS = 1 << 25  # elements per gathered key tensor (64 MiB in bf16): bounds the measurement's memory


@dataclass
class RowSample:
    """Sampled query tiles and their video tokens (raster indices; slots beyond a partial tile dropped)."""

    tiles: torch.Tensor  # (m,) tile indices
    slots: torch.Tensor  # (m, P) raster index per slot, -1 for padded slots of partial tiles
    rows: torch.Tensor  # (R,) raster indices of the valid slots, tile by tile

    @property
    def count(self) -> int:
        return int(self.rows.numel())


def sample_rows(problem: AttentionProblem, fraction: float = DEFAULT_FRACTION, salt: int = 0) -> RowSample:
    """An even spread of ``ceil(fraction * tiles)`` whole query tiles (at least one); the offset within each
    stride comes from ``salt``, so calls with other salts measure other tiles.  ``fraction >= 1``: every tile."""
    if not fraction > 0:
        raise ValueError(f"sample fraction must be > 0, got {fraction}")
    layout = TileLayout(problem.grid, problem.config.tile)
    n = layout.num_tiles
    m = max(1, min(n, math.ceil(fraction * n)))
    if m == n:
        tiles = torch.arange(n)
    else:
        offset = torch.rand(1, generator=torch.Generator().manual_seed(int(salt) & 0x7FFFFFFF)).item()
        tiles = torch.floor((torch.arange(m, dtype=torch.float64) + offset) * (n / m)).long().clamp_(0, n - 1)
    slots = layout.tile_token_index()[tiles]
    return RowSample(tiles, slots, slots[slots >= 0])


def _heads(x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """[B, S, H, D] -> [B, h, S, D] for the head subset (a copy of those heads only)."""
    return x.index_select(2, heads).transpose(1, 2)


def _text_keys(k: torch.Tensor, v: torch.Tensor, p: AttentionProblem):
    """(B, h, T, D) text keys/values and the (B, T) valid mask (None: all valid)."""
    t0 = p.text_row0
    tk, tv = k[:, :, t0:t0 + p.text_len], v[:, :, t0:t0 + p.text_len]
    return tk, tv, text_key_mask(k.shape[0], p.text_len, p.text_valid, k.device)


def _zero_invalid(x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Padded text keys are replaced by 0 (never 0 * NaN inside a sum); they are masked out as well."""
    return x if valid is None else torch.where(valid[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def full_rows(q, k, v, p: AttentionProblem, rows: torch.Tensor) -> torch.Tensor:
    """Full attention for video query ``rows`` (raster) of head-split ``[B, h, S, D]`` tensors -> (B, h, R, D)."""
    B, h, _, D = q.shape
    v0 = p.video_row0
    qr = q[:, :, v0 + rows]
    tk, tv, valid = _text_keys(k, v, p)
    keys = torch.cat([k[:, :, v0:v0 + p.grid.numel], _zero_invalid(tk, valid)], 2)
    vals = torch.cat([v[:, :, v0:v0 + p.grid.numel], _zero_invalid(tv, valid)], 2)
    mask = None
    if valid is not None:
        mask = torch.cat([torch.ones(B, p.grid.numel, dtype=torch.bool, device=q.device), valid], 1)[:, None, None, :]
    return sdpa(qr, keys, vals, mask)


def sliding_rows(q, k, v, p: AttentionProblem, sample: RowSample, max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """Sliding-tile attention for the sampled tiles' rows -> (B, h, R, D), in ``sample.rows`` order."""
    B, h, _, D = q.shape
    L, v0, dev = p.grid.numel, p.video_row0, q.device
    table = key_tile_table(p.grid, tuple(p.config.tile), tuple(p.config.window))  # geometry on the host: no syncs
    all_slots = TileLayout(p.grid, p.config.tile).tile_token_index()
    P = sample.slots.shape[1]
    pad = lambda x: torch.cat([x[:, :, v0:v0 + L], x.new_zeros(B, h, 1, D)], 2)  # noqa: E731  row L: empty slots
    qp, kp, vp = pad(q), pad(k), pad(v)
    tk, tv, valid = _text_keys(k, v, p)
    tk, tv = _zero_invalid(tk, valid), _zero_invalid(tv, valid)
    out = []
    per_tile = B * h * (table.shape[1] * P + p.text_len) * D
    chunk = max(1, max_elements // max(1, per_tile))
    for s in range(0, sample.tiles.numel(), chunk):
        key_tiles = table[sample.tiles[s:s + chunk]]  # (c, W)
        c = key_tiles.shape[0]
        key_slots = all_slots[key_tiles.clamp(min=0)]  # (c, W, P)
        ok = ((key_tiles[..., None] >= 0) & (key_slots >= 0)).flatten(1)  # (c, W*P)
        idx = torch.where(ok, key_slots.flatten(1), L).to(dev)
        qs = sample.slots[s:s + chunk]
        qi = qp[:, :, torch.where(qs >= 0, qs, L).to(dev)]  # (B, h, c, P, D)
        ki, vi = kp[:, :, idx], vp[:, :, idx]  # (B, h, c, W*P, D)
        mask = None
        if not bool(ok.all()) or valid is not None:
            mask = ok.to(dev)[None, None, :, None, :].expand(B, 1, c, 1, ok.shape[1])
        if p.text_len:
            ki = torch.cat([ki, tk[:, :, None].expand(B, h, c, p.text_len, D)], 3)
            vi = torch.cat([vi, tv[:, :, None].expand(B, h, c, p.text_len, D)], 3)
            if mask is not None:
                tm = torch.ones(B, p.text_len, dtype=torch.bool, device=dev) if valid is None else valid
                mask = torch.cat([mask, tm[:, None, None, None, :].expand(B, 1, c, 1, p.text_len)], 4)
        if mask is not None:
            mask = mask.expand(B, h, c, 1, mask.shape[-1]).flatten(1, 2)
        o = sdpa(qi.flatten(1, 2), ki.flatten(1, 2), vi.flatten(1, 2), mask)
        keep = torch.nonzero((qs >= 0).flatten()).flatten().to(dev)  # integer index: no device sync
        out.append(o.view(B, h, c * P, D).index_select(2, keep))
    return torch.cat(out, 2)


def coreset_rows(q, k, v, p: AttentionProblem, rows: torch.Tensor) -> torch.Tensor:
    """Coreset attention for video query ``rows`` -> (B, h, R, D): the whole grid is selected (the pooled keys
    need every bucket), but attention runs only for the rows asked for (a pruned row copies its center's)."""
    B, h, _, D = q.shape
    L, v0 = p.grid.numel, p.video_row0
    layout = BucketLayout(p.grid, tuple(p.config.bucket), p.config.ratio)
    qv, kv, vv = q[:, :, v0:v0 + L], k[:, :, v0:v0 + L], v[:, :, v0:v0 + L]
    kept_q = coreset_select(qv, layout)
    kept_k = kept_q if p.kv_from == "query" else coreset_select(kv, layout)
    src = coreset_unpool_source(kept_q, layout)[:, :, rows.to(q.device)]  # (B, h, R) pooled row of each row
    q_tok = kept_q.gather(2, src)  # the token whose output each row takes
    gather = lambda x, i: x.gather(2, i[..., None].expand(-1, -1, -1, D))  # noqa: E731
    qr, kp, vp = gather(qv, q_tok), gather(kv, kept_k), gather(vv, kept_k)
    tk, tv, valid = _text_keys(k, v, p)
    mask = None
    if p.text_len:
        kp = torch.cat([kp, _zero_invalid(tk, valid)], 2)
        vp = torch.cat([vp, _zero_invalid(tv, valid)], 2)
        if valid is not None:
            mask = torch.cat([torch.ones(B, kept_k.shape[2], dtype=torch.bool, device=q.device), valid], 1)
            mask = mask[:, None, None, :]
    return sdpa(qr, kp, vp, mask)


@dataclass
class CallErrors:
    """Error sums of one attention call: ``err_sq`` (3, H) per branch (full, coreset, sliding; full row 0),
    ``ref_sq`` (H,), both fp64 on the tensors' device; ``rows`` measured per head and batch element."""

    err_sq: torch.Tensor
    ref_sq: torch.Tensor
    rows: int

    def relative(self) -> torch.Tensor:
        """(3, H) relative L2 error of this call alone."""
        return relative_error(self.err_sq, self.ref_sq)


def relative_error(err_sq: torch.Tensor, ref_sq: torch.Tensor) -> torch.Tensor:
    """sqrt(err_sq / ref_sq), broadcasting ``ref_sq`` over a leading branch axis; 0/0 = 0, x/0 = inf; NaN stays."""
    ref = ref_sq.unsqueeze(-2) if err_sq.ndim == ref_sq.ndim + 1 else ref_sq
    ratio = torch.where(ref > 0, err_sq / ref.clamp_min(1e-300), torch.where(err_sq > 0, math.inf, 0.0))
    return ratio.sqrt()


def _sq(a: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per head (dim 1) sum of squares of ``a`` (or of ``a - b``) in fp64."""
    x = a.double() if b is None else a.double() - b.double()
    return (x * x).sum(dim=(0, 2, 3))


def branch_errors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, problem: AttentionProblem,
                  full_out: Optional[torch.Tensor] = None, fraction: float = DEFAULT_FRACTION, salt: int = 0,
                  max_elements: int = MAX_ELEMENTS) -> CallErrors:
    """Error sums of the coreset and sliding branches against full attention, per head, on a sample of query
    tiles.  ``q, k, v`` (and ``full_out``, the dense output when the caller has it) are ``[B, S, H, D]`` views
    (``vorta.routing.as_bshd``).  Without ``full_out`` full attention is computed for the sampled rows."""
    B, S, H, D = q.shape
    sample = sample_rows(problem, fraction, salt)
    rows = sample.rows.to(q.device)
    err = torch.zeros(3, H, dtype=torch.float64, device=q.device)
    ref = torch.zeros(H, dtype=torch.float64, device=q.device)
    per_head = B * S * D
    step = max(1, min(H, max_elements // max(1, per_head)))
    for h0 in range(0, H, step):
        heads = torch.arange(h0, min(H, h0 + step), device=q.device)
        qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
        if full_out is not None:
            full = full_out[:, problem.video_row0 + rows].index_select(2, heads).transpose(1, 2)
        else:
            full = full_rows(qh, kh, vh, problem, rows)
        sl = heads
        ref[sl] = _sq(full)
        err[CORESET, sl] = _sq(coreset_rows(qh, kh, vh, problem, rows), full)
        err[SLIDING, sl] = _sq(sliding_rows(qh, kh, vh, problem, sample, max_elements), full)
    err[FULL] = 0.0
    return CallErrors(err, ref, sample.count * B)


def output_errors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, problem: AttentionProblem,
                  heads: List[int], fraction: float = DEFAULT_FRACTION, salt: int = 0):
    """(err_sq, ref_sq) per head in ``heads`` of an attention output ``out`` (``[B, S, H, D]``, e.g. a routed
    call's) against full attention computed for a sample of query tiles: the audit of a run's chosen branches."""
    sample = sample_rows(problem, fraction, salt)
    rows = sample.rows.to(q.device)
    idx = torch.as_tensor(heads, dtype=torch.long, device=q.device)
    full = full_rows(_heads(q, idx), _heads(k, idx), _heads(v, idx), problem, rows)
    got = out[:, problem.video_row0 + rows].index_select(2, idx).transpose(1, 2)
    return _sq(got, full), _sq(full)
