"""The official VORTA inference schedules and router input, written out from the formulas (spec §1.2, §1.4, §8.1).

Independent of the pack's helpers on purpose: the tests compare the pack against these.

* Wan: diffusers' ``UniPCMultistepScheduler`` with ``use_flow_sigmas`` and ``flow_shift`` 5.0: alphas evenly
  spaced from 1 to 1/1000 over steps+1 points (float64), sigma = 1 - alpha, shifted, reversed, the last (0)
  dropped; timesteps = int64(sigma * 1000); the sigmas are kept as float32 with a final 0.  The time embedder
  runs in fp32 on the float32 sinusoid of the integer timestep, its output is cast to bf16.
* HunyuanVideo: diffusers' ``FlowMatchEulerDiscreteScheduler`` given sigmas evenly spaced from 1 to 0 (the last
  dropped), as float32, shifted with shift 5.0 in float32; timesteps = sigma * 1000 in float32.  The sinusoid is
  cast to bf16 and the time embedder runs in bf16.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F


def wan_unipc(steps: int = 50, shift: float = 5.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(float32 sigmas incl. the final 0, int64 timesteps) of the official Wan schedule."""
    alphas = np.linspace(1.0, 1.0 / 1000, steps + 1)
    s = 1.0 - alphas
    s = (shift * s / (1 + (shift - 1) * s))[::-1][:-1]
    timesteps = (s * 1000).astype(np.int64)
    return torch.from_numpy(np.append(s, 0.0).astype(np.float32)), torch.from_numpy(timesteps)


def hunyuan_flow_euler(steps: int = 50, shift: float = 5.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(float32 sigmas incl. the final 0, float32 timesteps) of the official HunyuanVideo schedule."""
    s = np.linspace(1.0, 0.0, steps + 1)[:-1].astype(np.float32)
    s = shift * s / (1 + (shift - 1) * s)
    assert s.dtype == np.float32
    sigmas = torch.from_numpy(s)
    return torch.cat([sigmas, torch.zeros(1)]), sigmas * 1000


def comfy_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """What ComfyUI hands the diffusion model for a float32 sigma: ``model_sampling.timestep`` = sigma * 1000."""
    return sigma.reshape(-1).float() * 1000.0


def diffusers_sinusoid(timesteps: torch.Tensor) -> torch.Tensor:
    """diffusers ``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)``: [cos | sin], float32."""
    half = 128
    freq = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    angle = timesteps[:, None].float() * freq[None, :]
    sin_cos = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
    return torch.cat([sin_cos[:, half:], sin_cos[:, :half]], dim=-1)


def official_temb(family: str, timesteps: torch.Tensor, w1, b1, w2, b2) -> torch.Tensor:
    """(B, dim) bf16 router input of the official pipeline for its own timesteps and the stored weights."""
    if family == "wan":  # fp32 time_embedder (diffusers keeps it in fp32), output .type_as(bf16 text states)
        x = diffusers_sinusoid(timesteps)
        h = F.linear(F.silu(F.linear(x, w1.float(), b1.float())), w2.float(), b2.float())
        return h.to(torch.bfloat16)
    x = diffusers_sinusoid(timesteps).to(torch.bfloat16)  # .to(pooled_projection.dtype)
    bf = torch.bfloat16
    return F.linear(F.silu(F.linear(x, w1.to(bf), b1.to(bf))), w2.to(bf), b2.to(bf))


def official_decisions(temb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, tau: float = 0.3) -> torch.Tensor:
    """(layers, heads) branch per head: per layer SiLU -> bf16 Linear -> softmax over 3, top-1 of batch 0."""
    out = []
    for w, b in zip(weight, bias):
        p = F.linear(F.silu(temb.to(w.dtype)), w, b).unflatten(-1, (-1, 3)).softmax(-1)[0]
        top, idx = p.max(-1)
        out.append(torch.where(top < tau, torch.zeros_like(idx), idx))
    return torch.stack(out)
