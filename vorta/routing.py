"""Routed attention: split heads by branch, run each branch on its heads, assemble in head order.

Branches are pluggable callables with one signature::

    branch(q, k, v, heads, out, problem) -> None

``q, k, v, out`` are ``[B, S, H, D]`` views (Wan's ``[B, L, H*D]`` viewed, HunyuanVideo's ``[B, H, L, D]``
transposed: no copies), ``heads`` an int64 index tensor on the device, and the branch writes
``out[:, :, heads]``.  The reference branches gather their heads; the Triton kernels read the head subset in
place through strides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import reference
from .config import BRANCHES, CORESET, FULL, SLIDING, VortaConfig
from .geometry import TokenGrid, coreset_density, sliding_density


@dataclass
class AttentionProblem:
    """What the branches need besides the tensors: the video grid, settings and text tokens."""

    grid: TokenGrid
    config: VortaConfig
    kv_from: str = "query"  # coreset K/V selection: "query" (Wan) or "key" (HunyuanVideo)
    text_len: int = 0
    text_valid: Optional[torch.Tensor] = None  # (B,) valid text tokens, None = all valid
    text_first: bool = False  # the sequence is [text, video] (ComfyUI >= 0.13 HunyuanVideo), else [video, text]

    @property
    def seq_len(self) -> int:
        return self.grid.numel + self.text_len


Branch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, AttentionProblem], None]


def _head_split(x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    return x.index_select(2, heads).transpose(1, 2)  # (B, h, S, D)


def reference_full(q, k, v, heads, out, p: AttentionProblem) -> None:
    o = reference.full_attention(_head_split(q, heads), _head_split(k, heads), _head_split(v, heads), p.text_len, p.text_valid)
    out[:, :, heads] = o.transpose(1, 2).to(out.dtype)


def reference_sliding(q, k, v, heads, out, p: AttentionProblem) -> None:
    o = reference.sliding_tile_attention(_head_split(q, heads), _head_split(k, heads), _head_split(v, heads), p.grid,
                                         p.config.tile, p.config.window, p.text_len, p.text_valid)
    out[:, :, heads] = o.transpose(1, 2).to(out.dtype)


def reference_coreset(q, k, v, heads, out, p: AttentionProblem) -> None:
    o = reference.coreset_attention(_head_split(q, heads), _head_split(k, heads), _head_split(v, heads), p.grid,
                                    p.config.bucket, p.config.ratio, p.kv_from, p.text_len, p.text_valid)
    out[:, :, heads] = o.transpose(1, 2).to(out.dtype)


@dataclass
class Branches:
    """The three branch implementations, indexed like the router output (full, coreset, sliding)."""

    full: Branch = reference_full
    coreset: Branch = reference_coreset
    sliding: Branch = reference_sliding
    name: str = "torch"

    def __getitem__(self, index: int) -> Branch:
        return (self.full, self.coreset, self.sliding)[index]


REFERENCE_BRANCHES = Branches()


def head_groups(decisions: torch.Tensor, device=None) -> List[torch.Tensor]:
    """Head indices per branch (increasing head order), computed on the host once per step and layer."""
    d = decisions.reshape(-1).cpu()
    return [torch.nonzero(d == b).flatten().to(device) for b in range(len(BRANCHES))]


def as_bshd(x: torch.Tensor, layout: str, heads: int) -> torch.Tensor:
    """View ComfyUI's layouts as [B, S, H, D] without copying: 'wan' = [B, L, H*D], 'hunyuan' = [B, H, L, D]."""
    if layout == "wan":
        B, S, HD = x.shape
        return x.view(B, S, heads, HD // heads)
    if layout == "hunyuan":
        return x.transpose(1, 2)
    raise ValueError(f"unknown layout {layout!r}; expected 'wan' ([B, L, H*D]) or 'hunyuan' ([B, H, L, D])")


def routed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, decisions, problem: AttentionProblem,
                     layout: str = "wan", branches: Branches = REFERENCE_BRANCHES) -> torch.Tensor:
    """Attention where head h uses branch ``decisions[h]`` (0 full, 1 coreset, 2 sliding).

    ``decisions`` is a (H,) tensor or a precomputed ``head_groups`` list.  Returns ``[B, S, H*D]``, the
    layout ComfyUI expects back from an attention call for both model families."""
    qs, ks, vs = (as_bshd(x, layout, heads) for x in (q, k, v))
    B, S, H, D = qs.shape
    if S != problem.seq_len:
        raise ValueError(f"attention over {S} tokens but the problem has {problem.seq_len} (grid {problem.grid.shape} + "
                         f"{problem.text_len} text)")
    groups = decisions if isinstance(decisions, (list, tuple)) else head_groups(decisions, q.device)
    out = torch.empty(B, S, H, D, dtype=q.dtype, device=q.device)
    for branch, idx in enumerate(groups):
        if idx.numel():
            branches[branch](qs, ks, vs, idx, out, problem)
    return out.view(B, S, H * D)


def attention_flops(problem: AttentionProblem, batch: int, heads_per_branch: Sequence[int], head_dim: int = 128) -> Dict[str, float]:
    """Executed attention FLOPs (4*Lq*Lk*D per head over the pairs computed) per branch and for dense."""
    L, T = problem.grid.numel, problem.text_len
    dense = 4.0 * head_dim * (L + T) ** 2
    c = problem.config
    per_head = {
        "full": dense,
        "coreset": 4.0 * head_dim * (coreset_density(problem.grid, c.bucket, c.ratio) ** 0.5 * L + T) ** 2,
        "sliding": 4.0 * head_dim * (sliding_density(problem.grid, c.tile, c.window) * L * L + 2 * L * T + T * T),
    }
    out = {name: batch * n * per_head[name] for name, n in zip(BRANCHES, heads_per_branch)}
    out["dense"] = batch * sum(heads_per_branch) * dense
    return out
