"""What every launcher needs: interpreter mode and the custom ops' argument checks."""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..checks import check_heads, check_kernel_support, check_qkv, check_sequence, check_text_valid
from ..geometry import TokenGrid

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_op_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: torch.Tensor, out: torch.Tensor,
                  grid: TokenGrid, text_len: int, text_valid: Optional[torch.Tensor], values_checked: bool,
                  what: str) -> None:
    """Everything a custom op's kernels index with, checked before any launch: [B, S, H, D] tensors of one shape,
    dtype and device with unit-stride rows, S = grid + text, a supported head dim, head indices in range and
    ``text_valid`` in [0, text_len].  ``values_checked`` skips reading the last two back from the device."""
    check_qkv(q, k, v, what)
    if q.ndim != 4:
        raise ValueError(f"{what}: q, k, v must be [B, S, H, D] views, got shape {tuple(q.shape)}")
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(f"{what}: out must be {tuple(q.shape)} {q.dtype} on {q.device} like q, got "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")
    for name, x in (("q", q), ("k", k), ("v", v), ("out", out)):
        if x.stride(-1) != 1:
            raise ValueError(f"{what}: {name} must have unit stride along the head dim, got strides {x.stride()}")
    check_kernel_support(q, what)
    B, S, H, D = q.shape
    check_sequence(S, grid.numel, grid.shape, text_len, what)
    check_heads(heads, H, q.device, what, values=not values_checked)
    check_text_valid(text_valid, B, text_len, what, values=not values_checked)


def unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def heads32(heads: torch.Tensor) -> torch.Tensor:
    return heads.to(torch.int32)


QUANT_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores (Ada, Hopper, Blackwell); INT8 alone would run from 8.0


def quant_unavailable_reason(device) -> Optional[str]:
    """Why the 8-bit path cannot run on ``device``, or None when it can (the interpreter emulates it)."""
    if INTERPRET:
        return None
    if torch.device(device).type != "cuda":
        return "the 8-bit kernels need a CUDA GPU"
    cc = torch.cuda.get_device_capability(device)
    if cc < QUANT_MIN_CAPABILITY:
        return (f"the 8-bit kernels need FP8 tensor cores (compute capability 8.9+: RTX 40/50, H100, B200); this GPU "
                f"is {cc[0]}.{cc[1]}")
    return None


def check_quant_support(device, what: str) -> None:
    reason = quant_unavailable_reason(device)
    if reason is not None:
        raise ValueError(f"{what}: {reason}. Use backend 'triton' (bf16).")
