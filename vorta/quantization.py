"""The 8-bit path's quantization in PyTorch: the reference of ``vorta/kernels/quantize.py`` and of the query
quantization inside the sliding kernel.

SageAttention's recipe, per (batch, head): K smoothed by its mean row (softmax does not change when every score of
a query moves by the same amount) then INT8 with one scale per key row; Q INT8 with one scale per query row (the
softmax scale folded in first); V FP8 e4m3 with one scale per channel.  Non-finite values are left out of every
statistic, and a non-finite row's scale is NaN, so it spreads exactly as far as it would in dense attention."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.floor(x + 0.5), torch.ceil(x - 0.5))


def quantize_rows_int8(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """INT8 values and one fp32 scale per row (last dim); x ~= values * scale.  A row with a non-finite value gets
    scale NaN (its finite values are still quantized); an all-zero row gets scale 0."""
    x = x.float()
    finite = torch.isfinite(x)
    xf = torch.where(finite, x, 0.0)
    amax = xf.abs().amax(-1)
    scale = torch.where(finite.all(-1), amax / INT8_MAX, float("nan"))
    inv = torch.where(amax > 0, INT8_MAX / amax, 0.0)
    return _round_half_away(xf * inv[..., None]).to(torch.int8), scale


def key_mean(k: torch.Tensor, live: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of the finite values per channel over the rows of k [..., n, D] (those with ``live`` [..., n] true)."""
    ok = torch.isfinite(k)
    if live is not None:
        ok = ok & live[..., None]
    total = torch.where(ok, k.float(), 0.0).sum(-2)
    return total / ok.float().sum(-2).clamp(min=1.0)


def quantize_keys(k: torch.Tensor, live: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Smoothed INT8 keys [..., n, D] and their row scales [..., n]; rows with ``live`` false are zeros, scale 0."""
    kc = k.float() - key_mean(k, live)[..., None, :]
    if live is not None:
        kc = torch.where(live[..., None], kc, 0.0)
    return quantize_rows_int8(kc)


def value_scale(v: torch.Tensor, live: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-channel FP8 scale of v [..., n, D]: the largest finite |v| over the (live) rows / 448 (1 where 0)."""
    a = torch.where(torch.isfinite(v), v.float().abs(), 0.0)
    if live is not None:
        a = torch.where(live[..., None], a, 0.0)
    s = a.amax(-2) / FP8_MAX
    return torch.where(s > 0, s, 1.0)


def quantize_values(v: torch.Tensor, live: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """FP8 values [..., n, D] (non-finite -> NaN) and their channel scales [..., D]; rows with ``live`` false are 0."""
    s = value_scale(v, live)
    x = torch.where(torch.isfinite(v), v.float() / s[..., None, :], float("nan"))
    if live is not None:
        x = torch.where(live[..., None], x, 0.0)
    return x.to(torch.float8_e4m3fn), s

