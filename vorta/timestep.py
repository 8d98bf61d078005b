"""The router's input, built the way the official VORTA inference builds it (spec §1.2, §1.4).

The released routers were trained and run on one specific tensor, so we rebuild exactly that tensor from the
running model's own time-MLP weights instead of reusing ComfyUI's timestep embedding:

* **Wan**: diffusers' UniPC feeds *integer* timesteps (``int64(sigma * 1000)``), its ``time_embedder`` is kept in
  fp32 (``_keep_in_fp32_modules``) and its output is cast to bf16.  ComfyUI feeds ``t = sigma * 1000`` as a float
  and runs ``time_embedding`` in the model dtype, which changes ~6 % of the released router's decisions.
* **HunyuanVideo**: float t, the fp32 sinusoid cast to bf16, ``time_in`` in bf16 (the clean timestep embedding,
  before the pooled text and guidance are added).

Weights are read as plain tensors and upcast to fp32 (``linear_weights``), so the result does not depend on the
dtype the user loaded the model in, only on the values stored.  No ComfyUI import: the engine runs without it.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

SINUSOID_CHANNELS = 256
ROUTER_INPUT_DTYPE = torch.bfloat16  # what the official routers read (spec §1.4)


def timestep_sinusoid(t: torch.Tensor, dim: int = SINUSOID_CHANNELS, max_period: float = 10000.0) -> torch.Tensor:
    """(B, dim) float32 ``[cos | sin]`` of raw timesteps in [0, 1000].

    Same ops in the same order as diffusers' ``Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`` and
    ComfyUI's flux ``timestep_embedding(t, dim, time_factor=1.0)``, hence bit-identical to both.  (ComfyUI's Wan
    ``sinusoidal_embedding_1d`` uses ``pow`` instead of ``exp`` and differs in the last bits: not what the
    official Wan pipeline ran.)"""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / half)
    args = t.reshape(-1).float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def unipc_timestep(t: torch.Tensor) -> torch.Tensor:
    """Integer timesteps as diffusers' UniPC (flow sigmas) feeds them to Wan: ``int64`` truncation of t.

    ComfyUI computes ``t = sigma * 1000`` in float32 where UniPC uses float64.  On the official 50-step, shift-5
    schedule the two differ by <= 4.6e-5 and no timestep lies within 0.03 of an integer, so truncating ComfyUI's
    t gives UniPC's integers exactly.  Over 677,250 timesteps of other UniPC schedules (1-300 steps, 15 shifts)
    0.06 % differ, all where the exact value is a whole number and UniPC's float64 lands one ulp below it
    (332.99999999999994 -> 332 vs ComfyUI's 333.0); rounding to 1e-4 before truncating fixes none of them and
    rounding to 1e-3 adds errors, so we truncate as UniPC does (measured in tests/test_timestep.py)."""
    return torch.trunc(t.reshape(-1).float())


# ------------------------------------------------------------------------------------------- weights


def _functions(m: nn.Module, name: str) -> list:
    """Weight patches ComfyUI applies when an op casts its weights (LoRA in low-VRAM and dynamic-VRAM modes)."""
    out = []
    lowvram = getattr(m, f"{name}_lowvram_function", None)  # ComfyUI >= 0.11 dynamic VRAM: applied first
    if lowvram is not None:
        out.append(lowvram)
    out.extend(getattr(m, f"{name}_function", None) or [])
    return out


def _plain(x: torch.Tensor, device, copy: bool) -> torch.Tensor:
    x = x.dequantize()  # ComfyUI QuantizedTensor (fp8/nvfp4/int8 + scales); a no-op on float tensors
    return x.to(device=device, dtype=torch.float32, copy=copy)


def linear_weights(m: nn.Module, device) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """fp32 ``(weight, bias)`` a Linear-like module computes with, read from what it stores, on ``device``.

    Handles plain ``nn.Linear`` and ComfyUI's ops: any storage dtype (bf16/fp16/fp8), weights offloaded to
    another device, ``QuantizedTensor`` (dequantized), older ComfyUI's scaled fp8 (``scale_weight``, 0.3.64), AWQ
    ``pre_quant_scale`` (folded into the weight columns) and the LoRA patches ComfyUI applies at cast time
    (``weight_lowvram_function``, then each ``weight_function``, on the fp32 copy, in ComfyUI's order).  LoRA
    merged into the weights (ComfyUI's normal mode) is already in ``m.weight``.  Returns None for storage that is
    not a plain tensor of the module's shape (GGUF's packed blocks, a meta tensor): the caller lets the op decode."""
    w = getattr(m, "weight", None)
    if not isinstance(w, torch.Tensor) or w.is_meta or getattr(w, "tensor_type", None) is not None:  # GGUF
        return None
    w_fns, b_fns = _functions(m, "weight"), _functions(m, "bias")
    w = _plain(w, device, copy=bool(w_fns))  # patches may work in place: never hand them the module's tensor
    expected = (getattr(m, "out_features", w.shape[0]), getattr(m, "in_features", w.shape[-1]))
    if w.dim() != 2 or tuple(w.shape) != tuple(expected):
        return None
    for f in w_fns:
        w = f(w).float()
    scale = getattr(m, "scale_weight", None)  # weight_function works on the unscaled fp8 values; scale after
    if isinstance(scale, torch.Tensor):
        w = w * scale.to(device=device, dtype=torch.float32)
    pre = getattr(m, "pre_quant_scale", None)
    if isinstance(pre, torch.Tensor):
        w = w * pre.to(device=device, dtype=torch.float32).reshape(1, -1)
    b = getattr(m, "bias", None)
    if isinstance(b, torch.Tensor):
        b = _plain(b, device, copy=bool(b_fns))
        for f in b_fns:
            b = f(b).float()
    else:
        b = None
    return w, b


def _mlp_layers(time_mlp: nn.Module) -> List[nn.Module]:
    """The two Linear layers of a Linear -> SiLU -> Linear time MLP (Wan ``time_embedding`` is a Sequential,
    HunyuanVideo ``time_in`` an MLPEmbedder with in_layer/silu/out_layer), in order."""
    children = list(time_mlp.children())
    linears = [c for c in children if hasattr(c, "weight")]
    others = [c for c in children if not hasattr(c, "weight")]
    if len(linears) != 2 or any(not isinstance(c, nn.SiLU) for c in others):
        raise ValueError(f"expected a Linear -> SiLU -> Linear time MLP, got {type(time_mlp).__name__} with "
                         f"children {[type(c).__name__ for c in children]}")
    return linears


def _linear(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``F.linear`` in x's dtype with the module's weights upcast to fp32 and then cast to x's dtype."""
    wb = linear_weights(m, x.device)
    if wb is None:  # storage only the op itself can decode: it dequantizes to the input's dtype
        return m(x).to(x.dtype)
    w, b = wb
    return F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))


@contextlib.contextmanager
def _ieee_fp32(device: torch.device) -> Iterator[None]:
    """fp32 matmuls without TF32 (diffusers runs Wan's time embedder in true fp32), restored afterwards."""
    previous = torch.get_float32_matmul_precision()
    if device.type != "cuda" or previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


# --------------------------------------------------------------------------------------------- input


def router_input(family: str, time_mlp: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(B, dim) bf16 router input for timesteps ``t`` (ComfyUI's ``sigma * 1000``, any float dtype), computed
    as the official inference does for ``family`` ("wan" / "hunyuan"), on t's device, from ``time_mlp``'s
    weights (Wan ``dm.time_embedding``, HunyuanVideo ``dm.time_in``)."""
    first, second = _mlp_layers(time_mlp)
    with torch.no_grad():
        if family == "wan":
            x = timestep_sinusoid(unipc_timestep(t))
            with _ieee_fp32(x.device):
                out = _linear(second, F.silu(_linear(first, x)))
        elif family == "hunyuan":
            x = timestep_sinusoid(t).to(ROUTER_INPUT_DTYPE)
            out = _linear(second, F.silu(_linear(first, x)))
        else:
            raise ValueError(f"unknown model family {family!r}")
    return out.to(ROUTER_INPUT_DTYPE)
