"""Argument checks at the engine's public boundary (``routed_attention`` and the two custom ops).

Why: a wrong argument must fail here, naming what was given and what was expected, before any branch can
leave heads unwritten or a kernel read or write out of bounds.  The checks use tensor metadata only, except
for values that live on the device (``text_valid``'s range, head lists not built by ``head_groups``): those
cost one small read per call, and none when the values are on the CPU.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

KERNEL_HEAD_DIMS = (16, 32, 64, 128, 256)
KERNEL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, what: str) -> None:
    """q, k and v: one shape, one dtype, one device (the branches index all three with q's geometry)."""
    for name, x in (("k", k), ("v", v)):
        if x.shape != q.shape or x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"{what}: q and {name} must have the same shape, dtype and device; got q "
                             f"{tuple(q.shape)} {q.dtype} on {q.device}, {name} {tuple(x.shape)} {x.dtype} on {x.device}")


def check_kernel_support(q: torch.Tensor, what: str) -> None:
    """Head dims and dtypes the Triton kernels are built for."""
    D = q.shape[-1]
    if D not in KERNEL_HEAD_DIMS:
        raise ValueError(f"{what}: head dim {D} is not supported by the Triton kernels (supported: "
                         f"{', '.join(map(str, KERNEL_HEAD_DIMS))}); use the 'torch' backend for this model")
    if q.dtype not in KERNEL_DTYPES:
        raise ValueError(f"{what}: dtype {q.dtype} is not supported by the Triton kernels (bf16, fp16, fp32)")


def check_sequence(seq_len: int, video_len: int, grid_shape, text_len: int, what: str) -> None:
    if text_len < 0:
        raise ValueError(f"{what}: text_len must be >= 0, got {text_len}")
    if seq_len != video_len + text_len:
        raise ValueError(f"{what}: attention over {seq_len} tokens but the problem has {video_len + text_len} "
                         f"(grid {tuple(grid_shape)} = {video_len} video tokens + {text_len} text)")


def check_text_valid(text_valid: Optional[torch.Tensor], batch: int, text_len: int, what: str,
                     values: bool = True) -> None:
    """``text_valid``: None, or a (B,) integer tensor with 0 <= text_valid[b] <= text_len.  ``values=False``
    checks shape and dtype only (the caller already checked the values)."""
    if text_valid is None:
        return
    if not isinstance(text_valid, torch.Tensor):
        raise ValueError(f"{what}: text_valid must be a ({batch},) integer tensor or None, got {type(text_valid).__name__}")
    if tuple(text_valid.shape) != (batch,) or text_valid.dtype.is_floating_point or text_valid.dtype.is_complex \
            or text_valid.dtype == torch.bool:
        raise ValueError(f"{what}: text_valid must be a ({batch},) integer tensor (valid text tokens per batch "
                         f"element), got shape {tuple(text_valid.shape)} {text_valid.dtype}")
    if values and text_valid.numel():
        lo, hi = torch.stack(torch.aminmax(text_valid)).tolist()  # one small read when text_valid is on a GPU
        if lo < 0 or hi > text_len:
            raise ValueError(f"{what}: text_valid must be in [0, {text_len}] (the text length), got "
                             f"{text_valid.tolist()}")


def check_heads(heads: torch.Tensor, num_heads: int, device: torch.device, what: str, values: bool = True) -> None:
    """A head index list for one branch: 1-D integer, on the tensors' device, distinct values in [0, H)."""
    if heads.ndim != 1 or heads.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{what}: heads must be a 1-D int32/int64 tensor of head indices, got shape "
                         f"{tuple(heads.shape)} {heads.dtype}")
    if heads.device != device:
        raise ValueError(f"{what}: heads are on {heads.device} but the tensors are on {device}")
    if heads.numel() > num_heads:
        raise ValueError(f"{what}: {heads.numel()} head indices for {num_heads} heads")
    if values and heads.numel():
        h = heads.cpu()  # one small read when the list is on a GPU
        if int(h.min()) < 0 or int(h.max()) >= num_heads or h.unique().numel() != h.numel():
            raise ValueError(f"{what}: head indices must be distinct and in [0, {num_heads}), got {h.tolist()}")


def check_groups_cover(groups: Sequence[torch.Tensor], num_heads: int, n_branches: int) -> None:
    """Head groups (one index list per branch) must name every head exactly once: a missing head would
    leave its output unwritten, an extra one would write out of bounds."""
    if len(groups) != n_branches:
        raise ValueError(f"routed_attention: {len(groups)} head groups given, expected one per branch ({n_branches})")
    for i, g in enumerate(groups):
        if not isinstance(g, torch.Tensor) or g.ndim != 1 or g.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"routed_attention: head group {i} must be a 1-D integer tensor")
    total = sum(int(g.numel()) for g in groups)
    if total != num_heads:
        raise ValueError(f"routed_attention: the head groups name {total} heads, expected each of the {num_heads} "
                         f"heads exactly once")
    every = torch.cat([g.cpu().long() for g in groups])  # one small read when the lists are on a GPU
    if not torch.equal(every.sort().values, torch.arange(num_heads)):
        raise ValueError(f"routed_attention: the head groups must name each head in [0, {num_heads}) exactly once, "
                         f"got {[g.tolist() for g in groups]}")


def check_decisions(decisions: torch.Tensor, num_heads: int, n_branches: int) -> torch.Tensor:
    """(H,) branch per head -> the CPU copy (the caller builds the head groups from it)."""
    d = decisions.reshape(-1).cpu()
    if d.numel() != num_heads:
        raise ValueError(f"routed_attention: {d.numel()} decisions for {num_heads} heads (one branch per head)")
    if d.dtype.is_floating_point or d.dtype == torch.bool or (d.numel() and (int(d.min()) < 0 or int(d.max()) >= n_branches)):
        raise ValueError(f"routed_attention: decisions must be integers in [0, {n_branches}) (0 full, 1 coreset, "
                         f"2 sliding), got {d.tolist()}")
    return d
