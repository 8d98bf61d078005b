"""An independent attention oracle for sampling tests: an ``optimized_attention_override`` for an *unpatched*
model that computes each self-attention call with explicit masks built from the token positions ComfyUI itself
reports for that call -- never from the pack's layout helpers.

Positions: Wan tokens are the latent grid in raster order (``transformer_options["grid_sizes"]`` where ComfyUI
reports it, else the grid the test gives).  HunyuanVideo tokens carry the position ids ComfyUI feeds its RoPE
(``pe_embedder`` input: video tokens (t, h, w), text tokens all zero); ComfyUI's own ``img_slice`` is checked
against them where it is reported.  Text validity comes from the call's additive key mask.
Branch rules are written from the spec (tile window with clamped centers; coreset buckets, centre, least-similar
margins, pruned tokens copy their centre's output) on fp64 explicit masks.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

FULL, CORESET, SLIDING = 0, 1, 2


class Positions:
    """Per token of the joint sequence: video coordinates (or None for a text token)."""

    def __init__(self, coords: List[Optional[Tuple[int, int, int]]]):
        self.coords = coords
        self.video = [i for i, c in enumerate(coords) if c is not None]
        self.text = [i for i, c in enumerate(coords) if c is None]
        vc = [coords[i] for i in self.video]
        self.grid = tuple(max(c[a] for c in vc) + 1 for a in range(3))

    @classmethod
    def raster(cls, grid: Sequence[int]) -> "Positions":
        F, H, W = grid
        return cls([(f, y, x) for f in range(F) for y in range(H) for x in range(W)])

    @classmethod
    def from_rope_ids(cls, ids: torch.Tensor) -> "Positions":
        """HunyuanVideo ids (S, 3): text rows are all zero, and so is video token (0, 0, 0); that one is the zero
        row directly followed by the video token (0, 0, 1)."""
        rows = [tuple(int(round(float(x))) for x in r) for r in ids]
        coords: List[Optional[Tuple[int, int, int]]] = [r if any(r) else None for r in rows]
        origin = [i for i in range(len(rows) - 1) if not any(rows[i]) and rows[i + 1] == (0, 0, 1)]
        assert len(origin) == 1, "cannot find video token (0, 0, 0) in the position ids"
        coords[origin[0]] = (0, 0, 0)
        return cls(coords)


def sliding_visible(p: Positions, tile, window) -> torch.Tensor:
    """(Lv, Lv) bool over the video tokens (in sequence order): the spec's clamped tile-window rule."""
    n = [math.ceil(g / t) for g, t in zip(p.grid, tile)]
    tiles = torch.tensor([[p.coords[i][a] // tile[a] for a in range(3)] for i in p.video])
    r = torch.tensor([w // 2 for w in window])
    lo, hi = r, torch.tensor(n) - 1 - r
    center = torch.where(lo > hi, hi, torch.minimum(torch.maximum(tiles, lo), hi))
    return ((center[:, None, :] - tiles[None, :, :]).abs() <= r).all(-1)


def coreset_select(x: torch.Tensor, p: Positions, bucket, ratio) -> Tuple[set, Dict[int, int]]:
    """For one head's (S, D) rows: kept sequence positions and pruned position -> its centre."""
    groups: Dict[tuple, List[int]] = {}
    for i in p.video:
        c = p.coords[i]
        groups.setdefault(tuple(c[a] // bucket[a] for a in range(3)), []).append(i)
    kept, owner = set(), {}
    for b, toks in groups.items():
        toks.sort(key=lambda i: p.coords[i])  # local raster order
        start = [b[a] * bucket[a] for a in range(3)]
        ext = [min(bucket[a], p.grid[a] - start[a]) for a in range(3)]
        centre_c = tuple(start[a] + ext[a] // 2 for a in range(3))
        centre = next(i for i in toks if p.coords[i] == centre_c)
        m = len(toks)
        k = max(0, min(m - 1, int(m * (1 - ratio)) - 1))
        xc = x[centre].double() / x[centre].double().norm().clamp_min(1e-12)
        sims = sorted(((float(xc @ (x[i].double() / x[i].double().norm().clamp_min(1e-12))), i)
                       for i in toks if i != centre), key=lambda s: s[0])
        kept.add(centre)
        kept.update(i for _, i in sims[:k])
        owner.update({i: centre for _, i in sims[k:]})
    return kept, owner


def attend(q, k, v, mask):
    s = (q.double() @ k.double().T) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1).nan_to_num(0.0) @ v.double()


def head_attention(q, k, v, p: Positions, key_valid: torch.Tensor, branch: int, cfg, kv_from: str) -> torch.Tensor:
    """One head, one batch element: (S, D) rows of ``branch`` on the joint sequence."""
    S = q.shape[0]
    vid = torch.tensor(p.video)
    is_text = torch.ones(S, dtype=torch.bool)
    is_text[vid] = False
    valid_text = is_text & key_valid
    if branch == FULL:
        return attend(q, k, v, key_valid[None, :].expand(S, S))
    if branch == SLIDING:
        mask = torch.zeros(S, S, dtype=torch.bool)
        mask[vid[:, None], vid[None, :]] = sliding_visible(p, cfg.tile, cfg.window)
        mask[:, valid_text] = True
        mask[is_text] = key_valid  # text queries: every valid key
        return attend(q, k, v, mask)
    kept_q, owner = coreset_select(q, p, cfg.bucket, cfg.ratio)
    kept_k = kept_q if kv_from == "query" else coreset_select(k, p, cfg.bucket, cfg.ratio)[0]
    keys = valid_text.clone()
    keys[list(kept_k)] = True
    out = attend(q, k, v, keys[None, :].expand(S, S))
    for t, c in owner.items():
        out[t] = out[c]
    return out


class Oracle:
    """The override plus the per-model-call bookkeeping (which self-attention call is which layer)."""

    def __init__(self, decisions: Callable[[float, int], torch.Tensor], cfg, kv_from: str,
                 positions: Callable[[dict, int], Positions]):
        self.decisions, self.cfg, self.kv_from, self.positions = decisions, cfg, kv_from, positions
        self.calls = 0  # self-attention calls in the current model call (the layer index)
        self.checked = 0
        self.ids = None  # HunyuanVideo: the last position ids ComfyUI computed
        self.x_shape = None  # the latent x of the model call in flight, as ComfyUI passed it

    def new_model_call(self):
        self.calls = 0

    def __call__(self, func, q, k, v, heads, mask=None, **kwargs):
        opts = kwargs.get("transformer_options") or {}
        hunyuan = bool(kwargs.get("skip_reshape"))
        S = q.shape[2] if hunyuan else q.shape[1]
        Sk = k.shape[2] if hunyuan else k.shape[1]
        p = self.positions(opts, S) if Sk == S else None
        if p is None:  # cross-attention, the text refiner, ...: ComfyUI's own attention
            return func(q, k, v, heads, mask=mask, **kwargs)
        layer = self.calls
        self.calls += 1
        if "block_index" in opts:  # ComfyUI >= 0.3.71 says which block this is
            assert layer == opts["block_index"] + (0 if opts.get("block_type") != "single" else self._double)
        img_slice = opts.get("img_slice")
        if img_slice is not None:
            assert list(range(*img_slice)) == p.video, (img_slice, p.video[:3])
        qs, ks, vs = (x if hunyuan else x.view(x.shape[0], S, heads, -1).transpose(1, 2) for x in (q, k, v))
        B, H, _, D = qs.shape
        key_valid = torch.ones(B, S, dtype=torch.bool)
        if mask is not None:
            key_valid = (mask.reshape(mask.shape[0], -1)[:, -S:] > -1).expand(B, S)
        dec = self.decisions(float(opts["sigmas"].reshape(-1)[0]), layer)
        out = torch.empty(B, H, S, D, dtype=torch.float64)
        for b in range(B):
            for h in range(H):
                out[b, h] = head_attention(qs[b, h], ks[b, h], vs[b, h], p, key_valid[b], int(dec[h]), self.cfg,
                                           self.kv_from)
        self.checked += 1
        return out.transpose(1, 2).reshape(B, S, H * D).to(q.dtype)

    _double = 0


def install_oracle(model, oracle: Oracle, hunyuan_double: int = 0):
    """A clone of the unpatched ``model`` whose attention runs through ``oracle`` (and whose HunyuanVideo position
    ids are recorded for it); returns (clone, remove_hook)."""
    import comfy.patcher_extension as pe

    m = model.clone()
    oracle._double = hunyuan_double
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = oracle

    def wrapper(executor, *args, **kwargs):
        oracle.new_model_call()
        oracle.x_shape = tuple(args[0].shape)
        return executor(*args, **kwargs)

    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "vorta_oracle", wrapper)
    dm = m.get_model_object("diffusion_model")
    handle = None
    if hasattr(dm, "pe_embedder"):
        def record(module, inputs):
            oracle.ids = inputs[0].detach().cpu()

        handle = dm.pe_embedder.register_forward_pre_hook(record)
    return m, (handle.remove if handle is not None else (lambda: None))
