"""Launcher of the 8-bit K/V kernels (``vorta/kernels/quantize.py``): statistics, then the quantizing gather."""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton

from .common import INTERPRET


class KVCopy(NamedTuple):
    """Tile-ordered keys/values as the sliding kernel reads them.  bf16 path: ``k``, ``v`` [B*h, keys, D] and
    ``pitch`` 0 (the scales are unused placeholders).  8-bit path: ``k`` int8 [B*h, keys, D] with ``k_scale``
    [B*h, keys], ``v`` fp8 [B*h*D, pitch] (transposed) with ``v_scale`` [B*h, D]."""
    k: torch.Tensor
    v: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor
    pitch: int


def quantize_kv(k: torch.Tensor, v: torch.Tensor, heads: torch.Tensor, perm: torch.Tensor, text_valid: torch.Tensor,
                has_text_valid: bool, video_len: int, text_len: int, video_row0: int, text_row0: int) -> KVCopy:
    """8-bit tile-ordered copies of the routed heads' K/V (video in ``perm`` order, then text); equals
    ``vorta.quantization.quantize_keys`` / ``quantize_values`` on the same rows (tests/test_quant.py)."""
    from .quantize import kv_quant_gather_kernel, kv_stats_kernel

    B, S, H, D = k.shape
    h = heads.numel()
    n = video_len + text_len
    block = 32 if INTERPRET else 64
    grid = (triton.cdiv(n, block), B * h)
    strides = (k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2))
    parts = torch.empty(3, grid[0], B * h, D, dtype=torch.float32, device=k.device)
    kv_stats_kernel[grid](k, v, perm, heads, text_valid, parts[0], parts[1], parts[2], *strides, h, video_len, n,
                          video_row0, text_row0, BLOCK=block, HEAD_DIM=D, HAS_TEXT_VALID=has_text_valid, num_warps=4)
    k_mean = parts[0].sum(0) / parts[1].sum(0).clamp(min=1.0)
    v_scale = parts[2].amax(0) / 448.0
    v_scale = torch.where(v_scale > 0, v_scale, 1.0).contiguous()
    pitch = triton.cdiv(n, 16) * 16  # TMA: every row of the transposed V starts 16-byte aligned
    kq = torch.empty(B * h, n, D, dtype=torch.int8, device=k.device)
    k_scale = torch.empty(B * h, n, dtype=torch.float32, device=k.device)
    vq = torch.empty(B * h * D, pitch, dtype=torch.float8_e4m3fn, device=k.device)
    kv_quant_gather_kernel[grid](k, v, kq, k_scale, vq, perm, heads, text_valid, k_mean, v_scale, *strides, h,
                                 video_len, n, pitch, video_row0, text_row0, BLOCK=block, HEAD_DIM=D,
                                 HAS_TEXT_VALID=has_text_valid, num_warps=4)
    return KVCopy(kq, vq, k_scale, v_scale, pitch)
