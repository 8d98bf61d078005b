"""The router input against the official pipelines' formulas on their full 50-step schedules, bit for bit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from official_schedules import (comfy_timestep, diffusers_sinusoid, hunyuan_flow_euler, official_decisions,
                                official_temb, wan_unipc)
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names, router_input
from comfyui_vorta.vorta.timestep import linear_weights, timestep_sinusoid, unipc_timestep

# real widths (Wan2.1-1.3B: 1536, 12 heads, 30 layers; HunyuanVideo: 3072, 24 heads) with fewer Hunyuan layers, so
# that 50 steps of bf16 router math stay quick on a CPU
REAL = {"wan": (1536, 12, official_layer_names("wan", 30)),
        "hunyuan": (3072, 24, official_layer_names("hunyuan", double=3, single=5))}


class MLPEmbedder(nn.Module):
    """HunyuanVideo's ``time_in`` layout (ComfyUI): in_layer -> silu -> out_layer."""

    def __init__(self, dim: int, dtype: torch.dtype):
        super().__init__()
        self.in_layer = nn.Linear(256, dim, dtype=dtype)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(dim, dim, dtype=dtype)

    def forward(self, x):
        return self.out_layer(self.silu(self.in_layer(x)))


def stored_weights(dim: int, seed: int):
    """Time-MLP weights as a bf16 checkpoint stores them (nn.Linear's default init scale)."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape, fan_in):
        return ((torch.rand(*shape, generator=g) * 2 - 1) / math.sqrt(fan_in)).to(torch.bfloat16)

    return u(dim, 256, fan_in=256), u(dim, fan_in=256), u(dim, dim, fan_in=dim), u(dim, fan_in=dim)


def comfy_mlp(family: str, weights, dtype: torch.dtype) -> nn.Module:
    """The model's time MLP as ComfyUI holds it after loading the checkpoint in ``dtype``."""
    w1, b1, w2, b2 = weights
    dim = w1.shape[0]
    m = (nn.Sequential(nn.Linear(256, dim, dtype=dtype), nn.SiLU(), nn.Linear(dim, dim, dtype=dtype))
         if family == "wan" else MLPEmbedder(dim, dtype))
    first, second = [c for c in m.children() if isinstance(c, nn.Linear)]
    with torch.no_grad():
        for lin, w, b in ((first, w1, b1), (second, w2, b2)):
            lin.weight.copy_(w.to(dtype))
            lin.bias.copy_(b.to(dtype))
    return m


def schedule(family: str):
    """(ComfyUI's t per step from the official float32 sigmas, the official pipeline's timesteps)."""
    sigmas, timesteps = wan_unipc() if family == "wan" else hunyuan_flow_euler()
    return comfy_timestep(sigmas[:-1]), timesteps


@pytest.mark.parametrize("family", ["wan", "hunyuan"])
@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_official_50_step_schedule_input_and_decisions_bit_for_bit(family, stored):
    dim, heads, names = REAL[family]
    weights = stored_weights(dim, seed=11)
    mlp = comfy_mlp(family, weights, stored)
    routers = make_random_routers(family, names, dim, heads, seed=7)
    t_comfy, t_official = schedule(family)
    assert t_comfy.shape == (50,)
    for tc, to in zip(t_comfy, t_official):
        want = official_temb(family, to.reshape(1), *weights)
        got = router_input(family, mlp, tc.reshape(1))
        assert got.dtype == torch.bfloat16 and got.shape == (1, dim)
        assert torch.equal(got, want), (family, float(tc), int(to) if family == "wan" else float(to))
        assert torch.equal(routers.decide(got, 0.3), official_decisions(want, routers.weight, routers.bias))


def test_official_wan_timesteps_are_the_truncated_comfy_timesteps():
    sigmas, timesteps = wan_unipc()
    assert timesteps.tolist()[:5] == [999, 995, 991, 987, 982] and timesteps.tolist()[-2:] == [172, 92]
    t = comfy_timestep(sigmas[:-1])
    assert torch.equal(unipc_timestep(t).long(), timesteps)
    exact = (1 - np.linspace(1.0, 1.0 / 1000, 51))
    exact = (5 * exact / (1 + 4 * exact))[::-1][:-1] * 1000
    frac = exact - np.floor(exact)
    assert frac.min() > 0.03 and frac.max() < 0.96  # far from whole numbers ...
    assert float((t.double() - torch.from_numpy(exact.copy())).abs().max()) < 5e-5  # ... and float32 is this close


def test_truncation_measured_on_other_unipc_schedules():
    """Where ComfyUI's float32 t and UniPC's float64 disagree after truncation: only whole-number timesteps that
    float64 misses by an ulp from below; rounding to 1e-4 first never helps (documented in unipc_timestep)."""
    plain = rounded = cases = 0
    for steps in range(1, 101):
        for shift in (1.0, 2.0, 3.0, 5.0, 7.0, 8.0, 12.0):
            sigmas, official = wan_unipc(steps, shift)
            t = comfy_timestep(sigmas[:-1])
            mine = unipc_timestep(t).long()
            by_1e4 = torch.div(torch.round(t.double() * 1e4).long(), 10000, rounding_mode="floor")
            plain += int((mine != official).sum())
            rounded += int((by_1e4 != official).sum())
            cases += steps
            for i in torch.nonzero(mine != official).flatten().tolist():
                assert int(mine[i]) == int(official[i]) + 1 and float(t[i]) == int(mine[i])
    assert cases == 35350 and 0 < plain <= rounded and plain < cases * 3e-3  # 96 of 35,350 (0.27 %)


def test_sinusoid_is_diffusers_and_hunyuan_comfy_formula_bit_for_bit():
    t = torch.tensor([0.0, 1.0, 92.0, 437.25, 999.0, 999.7998])
    assert timestep_sinusoid(t).dtype == torch.float32
    assert torch.equal(timestep_sinusoid(t), diffusers_sinusoid(t))


def test_stored_dtype_does_not_matter_where_the_values_agree():
    weights = stored_weights(64, seed=3)
    t = torch.tensor([731.37])
    for family in ("wan", "hunyuan"):
        ref = router_input(family, comfy_mlp(family, weights, torch.float32), t)
        for dtype in (torch.bfloat16, torch.float16):  # these small weights are exact in fp16 too
            assert torch.equal(router_input(family, comfy_mlp(family, weights, dtype), t), ref), (family, dtype)


# ------------------------------------------------------------------------- ComfyUI-style weight storage


class StoredLinear(nn.Module):
    """A Linear-like op holding arbitrary storage, as ComfyUI's ops do (no ComfyUI import in unit tests)."""

    def __init__(self, weight, bias, **extra):
        super().__init__()
        self.weight, self.bias = weight, bias
        self.out_features, self.in_features = extra.pop("shape", tuple(weight.shape))
        self.weight_function, self.bias_function = [], []
        for k, v in extra.items():
            setattr(self, k, v)
        self.forward_calls = 0

    def forward(self, x):  # only used for storage we cannot read (GGUF-like)
        self.forward_calls += 1
        return torch.nn.functional.linear(x, self.weight_fp32.to(x.dtype), self.bias.to(x.dtype))


def test_scaled_fp8_weights_are_upcast_and_scaled():
    w = torch.randn(8, 4) * 0.1
    w8 = (w / 0.25).to(torch.float8_e4m3fn)
    m = StoredLinear(w8, torch.zeros(8, dtype=torch.bfloat16), scale_weight=torch.tensor(0.25))
    got, b = linear_weights(m, torch.device("cpu"))
    assert torch.equal(got, w8.float() * 0.25) and got.dtype == torch.float32 and b.dtype == torch.float32


def test_weight_functions_apply_in_comfy_order_to_a_copy():
    w = torch.randn(8, 4)
    order = []

    def lowvram(x):  # a LowVramPatch may write into the weight it is given
        order.append("lowvram")
        return x.add_(1.0)

    def wrapper(x):
        order.append("function")
        return x * 2

    m = StoredLinear(w.clone(), torch.ones(8), weight_lowvram_function=lowvram)
    m.weight_function = [wrapper]
    m.bias_function = [lambda b: b - 1]
    got, b = linear_weights(m, torch.device("cpu"))
    assert order == ["lowvram", "function"]
    assert torch.equal(got, (w + 1) * 2) and torch.equal(b, torch.zeros(8))
    assert torch.equal(m.weight, w)  # the module's own weight is untouched


class Quantized(torch.Tensor):
    """Stands for ComfyUI's QuantizedTensor: integer storage, ``dequantize()`` gives the float weight."""

    def dequantize(self):
        return self.as_subclass(torch.Tensor).float() * 0.01


def test_quantized_tensor_is_dequantized():
    q = torch.Tensor._make_subclass(Quantized, torch.randint(-100, 100, (8, 4), dtype=torch.int8))
    got, _ = linear_weights(StoredLinear(q, None), torch.device("cpu"))
    assert torch.equal(got, q.as_subclass(torch.Tensor).float() * 0.01)


def test_unreadable_storage_falls_back_to_the_op_in_fp32():
    packed = torch.zeros(8, 2, dtype=torch.uint8)
    packed.tensor_type = "Q8_0"  # GGUF marker
    w1, w2 = torch.randn(16, 256) * 0.05, torch.randn(16, 16) * 0.05
    a = StoredLinear(packed, torch.zeros(16), shape=(16, 256), weight_fp32=w1)
    b = StoredLinear(torch.zeros(16, 16, dtype=torch.uint8), torch.zeros(16), shape=(16, 16), weight_fp32=w2)
    b.weight.tensor_type = "Q8_0"
    mlp = nn.Sequential(a, nn.SiLU(), b)
    got = router_input("wan", mlp, torch.tensor([500.0]))
    assert a.forward_calls == 1 and b.forward_calls == 1
    x = diffusers_sinusoid(torch.tensor([500.0]))
    want = torch.nn.functional.linear(torch.nn.functional.silu(torch.nn.functional.linear(x, w1)), w2)
    assert torch.equal(got, want.to(torch.bfloat16))


def test_rejects_other_mlps_and_families():
    with pytest.raises(ValueError, match="Linear -> SiLU -> Linear"):
        router_input("wan", nn.Sequential(nn.Linear(256, 8), nn.GELU(), nn.Linear(8, 8)), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="unknown model family"):
        router_input("flux", nn.Sequential(nn.Linear(256, 8), nn.SiLU(), nn.Linear(8, 8)), torch.tensor([1.0]))
