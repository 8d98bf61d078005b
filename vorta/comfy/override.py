"""The attention override: route a tagged self-attention call, or hand it to what ComfyUI would have run.

Who runs what (``Delegate``):
* calls VORTA does not route (untagged, a fallback reason, steps outside the start/end window) go to the override
  that was installed before ours (e.g. SageAttention or core's "Model Sparse Attention"), else to the layer's
  ``preferred_attention`` (ComfyUI >= 0.38), else to ComfyUI's backend ``func`` -- exactly what ComfyUI would
  have called without VORTA;
* VORTA's *full* heads must stay exact: the same chain, except that core's block-sparse override (marked
  ``_block_sparse_attention_patch``) is stepped over to the backend beneath it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import FULL
from ..routing import AttentionProblem, Branches, attention_flops, routed_attention
from .adapters import CallLayout
from .plan import StepState
from .stats import RunStats

TAG = "vorta_tag"
STATE = "vorta_state"
PREV = "vorta_prev_override"
PREFERRED = "vorta_preferred_attention"
OVERRIDE = "optimized_attention_override"
CORE_SPARSE = "_block_sparse_attention_patch"
CORE_SPARSE_PREVIOUS = "_block_sparse_attention_previous"


@dataclass
class CallState:
    """What one model call hands to its attention calls (through ``transformer_options[STATE]``)."""

    dm: object  # the diffusion model that is running (resolves the patched modules at call time)
    layout: CallLayout
    problem: AttentionProblem
    step: StepState
    t: float = 0.0  # the model timestep (sigma * 1000 for flow models) the decisions were made for
    sigma: float = 0.0
    attention_calls: int = 0  # tagged self-attention calls of this model call that reached the override


def is_ours(fn) -> bool:
    return bool(getattr(fn, "_vorta_override", False))


def is_core_sparse(fn) -> bool:
    return fn is not None and getattr(fn, CORE_SPARSE, None) is not None


def beneath_core_sparse(fn):
    """The override core's "Model Sparse Attention" runs for the calls it keeps dense (None: ComfyUI's backend)."""
    while is_core_sparse(fn):
        fn = getattr(fn, CORE_SPARSE_PREVIOUS, None)
    return fn


class Delegate:
    """What ComfyUI would run for this call without VORTA (``__call__``), and its exact variant (``exact``)."""

    def __init__(self, func, prev, preferred):
        self.func, self.prev = func, (None if is_ours(prev) else prev)
        self.preferred = getattr(preferred, "function", None)

    def _run(self, over, *args, **kwargs):
        if over is not None:
            return over(self.func, *args, **kwargs)
        if self.preferred is not None:
            return self.preferred(*args, **kwargs)
        return self.func(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._run(self.prev, *args, **kwargs)

    def exact(self, *args, **kwargs):
        return self._run(beneath_core_sparse(self.prev), *args, **kwargs)


class CallRouter:
    """Routes one attention call; counts what it did on ``stats``."""

    def __init__(self, adapter, stats: RunStats, branches_for):
        self.adapter = adapter
        self.stats = stats
        self.branches_for = branches_for  # device -> Branches (the kernels or the reference)

    def __call__(self, func, *args, **kwargs):
        opts = kwargs.get("transformer_options") or {}
        delegate = Delegate(func, opts.get(PREV), opts.get(PREFERRED))
        tag = opts.get(TAG)
        if tag is None:
            return delegate(*args, **kwargs)
        state: Optional[CallState] = opts.get(STATE)
        if state is not None:  # the model really ran (a cache beneath the model wrapper may skip it)
            state.attention_calls += 1
        q, k, v = args[0], args[1], args[2]
        heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
        if state is None:
            self.stats.add_fallback("no routing state for this call (the VORTA model wrapper did not run; another "
                                    "patch may call the blocks outside the diffusion model)", heads or 0)
            return self._not_routed(delegate, args, kwargs)
        if state.step is None:  # the model wrapper could not prepare routing (counted there, once per model call)
            return self._not_routed(delegate, args, kwargs)
        step = state.step
        if tag[0] == "vace":
            groups, counts = step.vace_groups, step.vace_counts
        else:
            layer = tag[1] if tag[0] != "single" else self.adapter.double + tag[1]
            groups, counts = step.groups[layer], step.counts[layer]
        if groups is None or counts[FULL] == sum(counts):
            self._count(state.problem, q, heads, counts)
            if not step.active:  # outside the start/end window VORTA does not route: the previous chain runs
                return self._not_routed(delegate, args, kwargs)
            if is_core_sparse(delegate.prev):
                self.stats.core_sparse_exact += 1
            return delegate.exact(*args, **kwargs)
        reason, layout, text_valid = check_call(q, k, v, heads, kwargs, opts, state)
        if reason is not None:
            self.stats.add_fallback(reason, heads or 0, _dense_flops(state.problem, q, heads))
            return self._not_routed(delegate, args, kwargs)
        problem = state.problem if text_valid is None else dataclasses.replace(state.problem, text_valid=text_valid)
        if is_core_sparse(delegate.prev):
            self.stats.core_sparse_exact += 1
        branches = dataclasses.replace(self.branches_for(q.device),
                                       full=full_branch(delegate.exact, layout, args, kwargs))
        out = routed_attention(q, k, v, heads, groups, problem, layout=layout, branches=branches)
        self.stats.add_call(counts, attention_flops(problem, q.shape[0], counts, head_dim=out.shape[-1] // heads),
                            branches.name)
        return out

    def _not_routed(self, delegate: Delegate, args, kwargs):
        if is_core_sparse(delegate.prev):
            self.stats.core_sparse_kept += 1
        return delegate(*args, **kwargs)

    def _count(self, problem: AttentionProblem, q, heads, counts) -> None:
        try:
            head_dim = q.shape[-1] // heads if q.ndim == 3 else q.shape[-1]
            self.stats.add_call(counts, attention_flops(problem, q.shape[0], counts, head_dim=head_dim))
        except Exception:  # pragma: no cover - counting must never break sampling
            pass


def _dense_flops(problem: AttentionProblem, q, heads) -> float:
    try:
        head_dim = q.shape[-1] // heads if q.ndim == 3 else q.shape[-1]
        return attention_flops(problem, q.shape[0], [heads, 0, 0], head_dim=head_dim)["dense"]
    except Exception:  # pragma: no cover
        return 0.0


def check_call(q, k, v, heads, kwargs, opts, state: CallState):
    """(reason to fall back or None, ComfyUI layout name, text_valid) for one tagged call."""
    if state.layout.unsupported:
        return state.layout.unsupported, None, None
    if heads is None:
        return "attention call without a head count", None, None
    if kwargs.get("skip_output_reshape"):
        return "caller asked for the [B, H, L, D] output layout", None, None
    if kwargs.get("skip_reshape"):
        layout = "hunyuan"
        if q.ndim != 4 or q.shape[1] != heads:
            return f"unexpected q shape {tuple(q.shape)} for skip_reshape", None, None
        L, Lk = q.shape[2], k.shape[2]
    else:
        layout = "wan"
        if q.ndim != 3:
            return f"unexpected q shape {tuple(q.shape)}", None, None
        L, Lk = q.shape[1], k.shape[1]
    if Lk != L or v.shape != k.shape:
        return f"keys ({Lk}) and queries ({L}) differ in length: not self-attention", None, None
    p = state.problem
    if L != p.seq_len:
        extra = L - p.seq_len
        what = "text " if p.text_len else ""
        return (f"{L} tokens but the video grid {p.grid.shape} has {p.grid.numel} (+{p.text_len} {what}tokens): "
                f"{'extra reference/motion tokens' if extra > 0 else 'fewer tokens than the grid'}"), None, None
    video = (p.text_len, L) if p.text_first else (0, p.grid.numel)
    img_slice = opts.get("img_slice")
    if img_slice is not None and p.text_len and tuple(int(i) for i in img_slice[:2]) != video:
        return (f"the model reports its video tokens at {list(img_slice)} but VORTA expected {list(video)}: "
                "unknown token order"), None, None
    text_valid = None
    mask = kwargs.get("mask")
    if mask is not None:
        text_valid, why = text_valid_from_mask(mask, q.shape[0], p)
        if why:
            return why, None, None
    return None, layout, text_valid


def text_valid_from_mask(mask: torch.Tensor, batch: int, p: AttentionProblem):
    """HunyuanVideo's additive key mask (0 = keep, -max = padded text) -> valid text tokens per batch element,
    checking that it masks text only and that the padded tokens end the text span."""
    if not torch.is_floating_point(mask):
        return None, f"boolean/integer attention mask {tuple(mask.shape)} (expected HunyuanVideo's additive mask)"
    m = mask
    while m.ndim > 2 and m.shape[-2] == 1:
        m = m.squeeze(-2)
    if m.ndim == 1:
        m = m[None]
    L, T, N = p.seq_len, p.text_len, p.grid.numel
    if m.ndim != 2 or m.shape[-1] != L or m.shape[0] not in (1, batch):
        return None, f"attention mask of shape {tuple(mask.shape)} is not a per-key mask"
    keep = m > -1.0
    video, text = (keep[:, T:], keep[:, :T]) if p.text_first else (keep[:, :N], keep[:, N:])
    if not bool(video.all()):
        return None, "attention mask hides video tokens"
    valid = text.sum(-1)
    if T and not bool((text == (torch.arange(T, device=m.device)[None] < valid[:, None])).all()):
        return None, "padded text tokens are not at the end of the text"
    if bool((valid == T).all()):
        return None, None
    return valid.expand(batch) if valid.shape[0] == 1 else valid, None


def full_branch(run_exact, layout, args, kwargs):
    """The *full* branch: the exact backend (``Delegate.exact``) on the head subset."""
    q, k, v = args[0], args[1], args[2]
    positional_heads = len(args) > 3

    def full(qs, ks, vs, idx, out, problem):
        n = int(idx.numel())
        B, S, H, D = out.shape
        if layout == "wan":
            sub = [x.view(B, S, H, D).index_select(2, idx).reshape(B, S, n * D) for x in (q, k, v)]
        else:
            sub = [x.index_select(1, idx) for x in (q, k, v)]
        if positional_heads:
            o = run_exact(*sub, n, *args[4:], **kwargs)
        else:
            o = run_exact(*sub, **{**kwargs, "heads": n})
        out[:, :, idx] = o.reshape(B, S, n, D).to(out.dtype)

    return full


def ours(fn):
    """Mark an override as VORTA's (nested calls keep the override found before ours)."""
    fn._vorta_override = True
    return fn


__all__ = ["CallState", "Delegate", "CallRouter", "TAG", "STATE", "PREV", "PREFERRED", "OVERRIDE", "Branches"]
