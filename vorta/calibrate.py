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
dense output it computed anyway (``full_out``).  Text query rows (HunyuanVideo) are not measured: their sliding rows
are exact and they are a small share of the rows; text keys are included for every video query exactly as each
branch attends to them.

Memory is bounded by working on a few heads and tiles (and, on the CPU, query rows) at a time (``max_elements``
per gathered tensor), so a calibrated step needs little more memory than a dense one.  The geometry tables live on
the device, cached per grid, so a call costs no host work or host-device synchronisation per head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import List, Optional

import torch

from .config import CORESET, FULL, SLIDING
from .geometry import BucketLayout, TileLayout, TokenGrid, key_tile_table
from .reference import NAN_SIMILARITY_KEY, sdpa, text_key_mask, unit_rows
from .routing import AttentionProblem

DEFAULT_FRACTION = 0.125
MAX_ELEMENTS = 1 << 25  # elements per gathered key tensor (64 MiB in bf16): bounds the measurement's memory


@dataclass
class RowSample:
    """Sampled query tiles and their video tokens (raster indices; slots beyond a partial tile dropped)."""

    tiles: torch.Tensor  # (m,) tile indices
    slots: torch.Tensor  # (m, P) raster index per slot, -1 for padded slots of partial tiles
    rows: torch.Tensor  # (R,) raster indices of the valid slots, tile by tile
    grid_numel: int  # L: the zero row that empty slots point at
    _on: dict = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return int(self.rows.numel())

    def on(self, device):
        """(tiles, query slots with empty slots -> L, positions of the valid slots) on ``device``, copied once per
        call: one host-to-device copy instead of one per head and tile chunk."""
        key = str(device)
        got = self._on.get(key)
        if got is None:
            qslots = torch.where(self.slots >= 0, self.slots, self.grid_numel)
            keep = torch.nonzero((self.slots >= 0).flatten()).flatten()
            got = tuple(x.to(device) for x in (self.tiles, qslots, keep))
            self._on[key] = got
        return got


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
    slots = _sliding_tables(problem.grid, tuple(problem.config.tile), tuple(problem.config.window), "cpu")[2][tiles]
    return RowSample(tiles, slots, slots[slots >= 0], problem.grid.numel)


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


def _attend(q, k, v, mask: Optional[torch.Tensor], max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """``reference.sdpa``, in query chunks on the CPU, where it holds the whole (B, h, rows, keys) score matrix
    (GPU kernels never build it)."""
    B, h, R, _ = q.shape
    step = R if q.device.type != "cpu" else max(1, max_elements // max(1, B * h * k.shape[2]))
    if step >= R:
        return sdpa(q, k, v, mask)
    m = (lambda i: None) if mask is None else (lambda i: mask if mask.shape[2] == 1 else mask[:, :, i:i + step])
    return torch.cat([sdpa(q[:, :, i:i + step], k, v, m(i)) for i in range(0, R, step)], 2)


def full_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: AttentionProblem, rows: torch.Tensor,
              max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
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
    return _attend(qr, keys, vals, mask, max_elements)


@lru_cache(maxsize=16)
def _sliding_tables(grid: TokenGrid, tile: tuple, window: tuple, device: str):
    """Per query tile: the raster index of every key slot of its window (L for empty slots) and which slots are
    keys, on ``device``; plus, on the host, each tile's own slots and whether its window has empty slots.  Cached:
    building them per call costs more than the measurement at 720p."""
    table = key_tile_table(grid, tile, window)  # (nT, W)
    slots = TileLayout(grid, tile).tile_token_index()  # (nT, P)
    key_slots = slots[table.clamp(min=0)]  # (nT, W, P)
    ok = ((table[..., None] >= 0) & (key_slots >= 0)).flatten(1)  # (nT, W*P)
    idx = torch.where(ok, key_slots.flatten(1), grid.numel)
    dev = torch.device(device)
    return idx.to(dev), ok.to(dev), slots, ~ok.all(1)


@lru_cache(maxsize=16)
def _bucket_tables(grid: TokenGrid, bucket: tuple, ratio: float, device: str):
    """The bucket layout as device tables for ``_select`` (the selection of ``reference.coreset_select``, whose
    tables are rebuilt on the host for every call): cached per grid and device, no host round trips per head."""
    layout = BucketLayout(grid, bucket, ratio)
    members, center_slot, keep = layout.members(), layout.center_slot(), layout.keep_count()
    G, Bk = members.shape
    center_idx = members.gather(1, center_slot[:, None]).squeeze(1)
    excluded = (members < 0) | (torch.arange(Bk)[None, :] == center_slot[:, None])
    take = torch.nonzero((torch.arange(Bk)[None, :] < keep[:, None]).flatten()).flatten()  # (sum k,) in G*Bk
    bucket_of_kept = torch.arange(G).repeat_interleave(keep)
    bucket_of_token = torch.empty(grid.numel, dtype=torch.long)
    valid = members >= 0
    bucket_of_token[members[valid]] = torch.arange(G)[:, None].expand_as(members)[valid]
    dev = torch.device(device)
    return tuple(x.to(dev) for x in (members, center_idx, excluded, take, bucket_of_kept, bucket_of_token))


def _select(x: torch.Tensor, tables) -> torch.Tensor:
    """(B, h, P) kept raster indices of ``x`` (B, h, L, D) in the official pooled order: ``reference.coreset_select``
    on cached tables (same normalisation, NaN key and stable tie rule; the tests compare the two)."""
    members, center_idx, excluded, take, bucket_of_kept, _ = tables
    B, h = x.shape[:2]
    Bk = members.shape[1]
    xn = unit_rows(x)
    sim = (xn[:, :, members.clamp(min=0)] * xn[:, :, center_idx, None, :]).sum(-1)  # (B, h, G, Bk)
    sim = torch.where(torch.isnan(sim), torch.full_like(sim, NAN_SIMILARITY_KEY), sim).masked_fill(excluded, math.inf)
    order = torch.argsort(sim, dim=-1, stable=True)
    kept_slots = order.flatten(2).index_select(2, take)  # (B, h, sum k)
    kept_raster = members.flatten()[bucket_of_kept * Bk + kept_slots]
    return torch.cat([center_idx.expand(B, h, -1), kept_raster], 2)


def sliding_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: AttentionProblem, sample: RowSample,
                 max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """Sliding-tile attention for the sampled tiles' rows -> (B, h, R, D), in ``sample.rows`` order."""
    B, h, _, D = q.shape
    L, v0, dev = p.grid.numel, p.video_row0, q.device
    idx_all, ok_all, slots_all, ragged = _sliding_tables(p.grid, tuple(p.config.tile), tuple(p.config.window),
                                                         str(dev))
    W = idx_all.shape[1]
    P = sample.slots.shape[1]
    pad = lambda x: torch.cat([x[:, :, v0:v0 + L], x.new_zeros(B, h, 1, D)], 2)  # noqa: E731  row L: empty slots
    qp, kp, vp = pad(q), pad(k), pad(v)
    tk, tv, valid = _text_keys(k, v, p)
    tk, tv = _zero_invalid(tk, valid), _zero_invalid(tv, valid)
    out = []
    per_tile = B * h * (W + p.text_len) * D
    chunk = max(1, max_elements // max(1, per_tile))
    tiles_dev, qslots_dev, keep_dev = sample.on(dev)
    for s in range(0, sample.tiles.numel(), chunk):
        c = min(chunk, sample.tiles.numel() - s)
        t = tiles_dev[s:s + c]
        idx = idx_all.index_select(0, t)  # (c, W)
        qi = qp[:, :, qslots_dev[s:s + c]]  # (B, h, c, P, D)
        ki, vi = kp[:, :, idx], vp[:, :, idx]  # (B, h, c, W, D)
        mask = None
        if bool(ragged[sample.tiles[s:s + c]].any()) or valid is not None:
            mask = ok_all.index_select(0, t)[None, None, :, None, :].expand(B, 1, c, 1, W)
        if p.text_len:
            ki = torch.cat([ki, tk[:, :, None].expand(B, h, c, p.text_len, D)], 3)
            vi = torch.cat([vi, tv[:, :, None].expand(B, h, c, p.text_len, D)], 3)
            if mask is not None:
                tm = torch.ones(B, p.text_len, dtype=torch.bool, device=dev) if valid is None else valid
                mask = torch.cat([mask, tm[:, None, None, None, :].expand(B, 1, c, 1, p.text_len)], 4)
        if mask is not None:
            mask = mask.expand(B, h, c, 1, mask.shape[-1]).flatten(1, 2)
        o = sdpa(qi.flatten(1, 2), ki.flatten(1, 2), vi.flatten(1, 2), mask)
        out.append(o.reshape(B, h, c * P, D))  # SDPA on a GPU may return other strides
    return torch.cat(out, 2).index_select(2, keep_dev)


def coreset_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: AttentionProblem, rows: torch.Tensor,
                 max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """Coreset attention for video query ``rows`` (raster, on the device) -> (B, h, R, D): the whole grid is
    selected (the pooled keys need every bucket), but attention runs only for the rows asked for (a pruned row
    copies its center's output)."""
    B, h, _, D = q.shape
    L, v0 = p.grid.numel, p.video_row0
    tables = _bucket_tables(p.grid, tuple(p.config.bucket), float(p.config.ratio), str(q.device))
    qv, kv, vv = q[:, :, v0:v0 + L], k[:, :, v0:v0 + L], v[:, :, v0:v0 + L]
    kept_q = _select(qv, tables)
    kept_k = kept_q if p.kv_from == "query" else _select(kv, tables)
    G = tables[1].numel()
    src = tables[5].expand(B, h, L).clone()  # pooled row each token takes: its bucket's center (rows 0..G-1) ...
    pooled = torch.arange(kept_q.shape[2], device=q.device).expand(B, h, -1)
    src.scatter_(2, kept_q[:, :, G:], pooled[:, :, G:])  # ... or its own row when kept
    q_tok = kept_q.gather(2, src[:, :, rows])  # the token whose output each row takes
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
    return _attend(qr, kp, vp, mask, max_elements)


@dataclass
class CallErrors:
    """Error sums of one attention call: ``err_sq`` (3, H) per branch (full, coreset, sliding; full row 0),
    ``ref_sq`` (H,), both fp64 on the tensors' device; ``rows`` measured per head and batch element."""

    err_sq: torch.Tensor
    ref_sq: torch.Tensor
    rows: int


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
            full = full_rows(qh, kh, vh, problem, rows, max_elements)
        sl = heads
        ref[sl] = _sq(full)
        err[CORESET, sl] = _sq(coreset_rows(qh, kh, vh, problem, rows, max_elements), full)
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
