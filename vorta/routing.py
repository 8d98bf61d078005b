"""Routed attention: split heads by branch, run each branch on its heads, assemble in head order.

Branches are pluggable callables with one signature::

    branch(q, k, v, heads, out, problem) -> None

``q, k, v, out`` are ``[B, S, H, D]`` views (Wan's ``[B, L, H*D]`` viewed, HunyuanVideo's ``[B, H, L, D]``
transposed: no copies), ``heads`` an int64 index tensor on the device, and the branch writes
``out[:, :, heads]``.  The reference branches gather their heads; the Triton kernels read the head subset in
place through strides.  ``routed_attention`` checks every argument once per call (``vorta/checks.py``), so a
branch may trust what it is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import reference
from .checks import check_decisions, check_groups_cover, check_qkv, check_sequence, check_text_valid
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
    text_first: bool = False  # [text (text_len tokens), video] (ComfyUI >= 0.13 HunyuanVideo) instead of [video, text]

    def __post_init__(self):
        if self.kv_from not in ("query", "key"):
            raise ValueError(f"kv_from must be 'query' (Wan) or 'key' (HunyuanVideo), got {self.kv_from!r}")
        if int(self.text_len) != self.text_len or self.text_len < 0:
            raise ValueError(f"text_len must be an integer >= 0, got {self.text_len!r}")

    @property
    def seq_len(self) -> int:
        return self.grid.numel + self.text_len

    @property
    def video_row0(self) -> int:
        """Sequence row of video token 0 (``sequence_rows``)."""
        return sequence_rows(self.grid.numel, self.text_len, self.text_first)[0]

    @property
    def text_row0(self) -> int:
        """Sequence row of text token 0 (``sequence_rows``)."""
        return sequence_rows(self.grid.numel, self.text_len, self.text_first)[1]


def sequence_rows(video_len: int, text_len: int, text_first: bool) -> Tuple[int, int]:
    """(video_row0, text_row0): video token r is sequence row video_row0 + r, text token j is text_row0 + j.
    The kernels address both token orders through these two numbers instead of moving rows."""
    return (text_len, 0) if text_first else (0, video_len)


Branch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, AttentionProblem], None]


def _head_split(x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    return x.index_select(2, heads).transpose(1, 2)  # (B, h, S, D)


def reference_full(q, k, v, heads, out, p: AttentionProblem) -> None:
    o = reference.full_attention(_head_split(q, heads), _head_split(k, heads), _head_split(v, heads), p.text_len,
                                 p.text_valid, p.text_first)
    out[:, :, heads] = o.transpose(1, 2).to(out.dtype)


def reference_sliding(q, k, v, heads, out, p: AttentionProblem) -> None:
    o = reference.sliding_tile_attention(_head_split(q, heads), _head_split(k, heads), _head_split(v, heads), p.grid,
                                         p.config.tile, p.config.window, p.text_len, p.text_valid, p.text_first)
    out[:, :, heads] = o.transpose(1, 2).to(out.dtype)


def reference_coreset(q, k, v, heads, out, p: AttentionProblem) -> None:
    o = reference.coreset_attention(_head_split(q, heads), _head_split(k, heads), _head_split(v, heads), p.grid,
                                    p.config.bucket, p.config.ratio, p.kv_from, p.text_len, p.text_valid,
                                    p.text_first)
    out[:, :, heads] = o.transpose(1, 2).to(out.dtype)


@dataclass
class Branches:
    """The three branch implementations, indexed like the router output (full, coreset, sliding)."""

    full: Branch = reference_full
    coreset: Branch = reference_coreset
    sliding: Branch = reference_sliding
    name: str = "torch"
    sparse_head_dims: Optional[Tuple[int, ...]] = None  # head dims the coreset/sliding branches run (None: any)

    def __getitem__(self, index: int) -> Branch:
        return (self.full, self.coreset, self.sliding)[index]


REFERENCE_BRANCHES = Branches()


class HeadGroups(list):
    """Head indices per branch, checked when built: ``routed_attention`` trusts them for ``num_heads`` heads
    without reading them back from the device."""

    def __init__(self, groups, num_heads: int):
        super().__init__(groups)
        self.num_heads = num_heads


def head_groups(decisions: torch.Tensor, device=None) -> HeadGroups:
    """Head indices per branch (increasing head order), computed on the host once per step and layer."""
    return _groups(check_decisions(decisions, decisions.numel(), len(BRANCHES)), device)


def _groups(d: torch.Tensor, device) -> HeadGroups:
    return HeadGroups([torch.nonzero(d == b).flatten().to(device) for b in range(len(BRANCHES))], d.numel())


def as_bshd(x: torch.Tensor, layout: str, heads: int) -> torch.Tensor:
    """View ComfyUI's layouts as [B, S, H, D] without copying: 'wan' = [B, L, H*D], 'hunyuan' = [B, H, L, D]."""
    if layout == "wan":
        if x.ndim != 3 or x.shape[2] % heads:
            raise ValueError(f"layout 'wan' expects [B, L, H*D] with H*D divisible by {heads} heads, got {tuple(x.shape)}")
        B, S, HD = x.shape
        return x.view(B, S, heads, HD // heads)
    if layout == "hunyuan":
        if x.ndim != 4 or x.shape[1] != heads:
            raise ValueError(f"layout 'hunyuan' expects [B, H={heads}, L, D], got {tuple(x.shape)}")
        return x.transpose(1, 2)
    raise ValueError(f"unknown layout {layout!r}; expected 'wan' ([B, L, H*D]) or 'hunyuan' ([B, H, L, D])")


def _checked_groups(decisions, heads: int, device: torch.device) -> List[torch.Tensor]:
    """The head groups for ``decisions`` after checking they name each of ``heads`` heads exactly once."""
    if not isinstance(decisions, (list, tuple)):
        return _groups(check_decisions(decisions, heads, len(BRANCHES)), device)
    if not (isinstance(decisions, HeadGroups) and decisions.num_heads == heads and len(decisions) == len(BRANCHES)):
        check_groups_cover(decisions, heads, len(BRANCHES))
    for g in decisions:
        if g.device != device:
            raise ValueError(f"routed_attention: head groups are on {g.device} but the tensors are on {device}")
    return list(decisions)


def routed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, decisions, problem: AttentionProblem,
                     layout: str = "wan", branches: Branches = REFERENCE_BRANCHES) -> torch.Tensor:
    """Attention where head h uses branch ``decisions[h]`` (0 full, 1 coreset, 2 sliding).

    ``decisions`` is a (H,) tensor or a precomputed ``head_groups`` list.  Returns ``[B, S, H*D]``, the
    layout ComfyUI expects back from an attention call for both model families."""
    check_qkv(q, k, v, "routed_attention")
    qs, ks, vs = (as_bshd(x, layout, heads) for x in (q, k, v))
    B, S, H, D = qs.shape
    check_sequence(S, problem.grid.numel, problem.grid.shape, problem.text_len, "routed_attention")
    check_text_valid(problem.text_valid, B, problem.text_len, "routed_attention")
    if problem.text_valid is not None and problem.text_valid.device != q.device:
        problem = replace(problem, text_valid=problem.text_valid.to(q.device))
    groups = _checked_groups(decisions, H, q.device)
    dims = branches.sparse_head_dims
    if dims is not None and D not in dims and (groups[CORESET].numel() or groups[SLIDING].numel()):
        raise ValueError(f"routed_attention: head dim {D} is not supported by the {branches.name} coreset/sliding "
                         f"branches (supported: {', '.join(map(str, dims))}); use the 'torch' backend")
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
