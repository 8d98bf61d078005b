"""What every launcher needs: interpreter mode and input checks."""
from __future__ import annotations

import os

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_inputs(q: torch.Tensor, what: str) -> None:
    D = q.shape[-1]
    if D not in (16, 32, 64, 128, 256):
        raise ValueError(f"{what}: head dim {D} is not supported by the Triton kernels (16-256, power of two)")
    if q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{what}: dtype {q.dtype} is not supported (bf16, fp16, fp32)")


def unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def heads32(heads: torch.Tensor) -> torch.Tensor:
    return heads.to(torch.int32)
