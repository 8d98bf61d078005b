"""Real ComfyUI sampling over the official 50-step schedules feeds the routers the official input, bit for bit.

Tiny Wan / HunyuanVideo checkpoints (bf16 on disk, like the released weights) are loaded and sampled by ComfyUI:
Wan through ``comfy.sample.sample_custom`` (what the SamplerCustom node runs) over UniPC's float32 sigmas,
HunyuanVideo through KSampler with ModelSamplingSD3(shift 5) and the 'simple' scheduler.  We record the tensor
the adapter hands to ``RouterSet.decide`` at every step and compare it with the input built from the formulas in
``tests/official_schedules.py`` and the checkpoint's own tensors; the routing preview is checked the same way for
every dtype ComfyUI can load the model in.
"""
from __future__ import annotations

import pytest
import torch

from official_schedules import hunyuan_flow_euler, official_decisions, official_temb, wan_unipc
from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import RouterSet, make_random_routers, official_layer_names

TINY = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(1, 2, 2), ratio=0.5)
LATENT = (1, 16, 1, 2, 4)
TIME_MLP = {"wan": ("time_embedding.0", "time_embedding.2"), "hunyuan": ("time_in.in_layer", "time_in.out_layer")}


def routers_for(family: str) -> RouterSet:
    names = official_layer_names("wan", 2) if family == "wan" else official_layer_names("hunyuan", double=2, single=2)
    return make_random_routers(family, names, 256, 2, seed=21)


def record_router_inputs(monkeypatch) -> list:
    """Every tensor the adapter routes on, in call order (the adapter calls decide once per new timestep)."""
    seen = []
    original = RouterSet.decide

    def decide(self, temb, tau_sparse=0.3):
        seen.append(temb.detach().clone())
        return original(self, temb, tau_sparse)

    monkeypatch.setattr(RouterSet, "decide", decide)
    return seen


def wan_cond(seed: int):
    """A short text context (real prompts are padded to 512 tokens; the length does not touch the routing)."""
    return [[torch.randn(1, 8, 4096, generator=torch.Generator().manual_seed(seed)), {}]]


def checkpoint_time_mlp(harness, kind: str, family: str):
    """(w1, b1, w2, b2) as the checkpoint stores them (bf16)."""
    from safetensors.torch import load_file

    sd = load_file(harness.checkpoint(kind))
    first, second = TIME_MLP[family]
    return tuple(sd[f"{p}.{n}"] for p in (first, second) for n in ("weight", "bias"))


def loaded_time_mlp(model, family: str):
    """(w1, b1, w2, b2) as the loaded model stores them, upcast: what fp16/fp8 storage leaves of the weights."""
    dm = model.get_model_object("diffusion_model")
    mlp = dm.time_embedding if family == "wan" else dm.time_in
    first, second = [c for c in mlp.children() if hasattr(c, "weight")]
    return tuple(getattr(lin, n).float() for lin in (first, second) for n in ("weight", "bias"))


def official_inputs(family: str, timesteps: torch.Tensor, weights) -> torch.Tensor:
    return torch.cat([official_temb(family, t.reshape(1), *weights) for t in timesteps])


def assert_same(got: list, want: torch.Tensor, routers: RouterSet, timesteps: torch.Tensor) -> None:
    assert len(got) == len(want) == 50, len(got)
    got = torch.cat(got)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    bad = [i for i in range(len(want)) if not torch.equal(got[i], want[i])]
    assert not bad, f"steps {bad} differ (t = {[float(timesteps[i]) for i in bad]})"
    for i in range(len(want)):
        official = official_decisions(want[i:i + 1], routers.weight, routers.bias)
        assert torch.equal(routers.decide(got[i:i + 1]), official), i


def test_wan_sampled_over_the_official_unipc_sigmas(harness, vorta_comfy, monkeypatch):
    """SamplerCustom's path (comfy.sample.sample_custom, euler) over UniPC's float32 sigmas, real CFG 5.0: the
    routers see int(t) through the fp32 time MLP, as in the official pipeline."""
    import comfy.sample
    import comfy.samplers

    P = vorta_comfy
    model = harness.load("wan_t2v")
    routers = routers_for("wan")
    patched = P.apply_vorta(model, build_settings(mode="router"), P.RouterBundle(routers, TINY, "random"))
    sigmas, timesteps = wan_unipc()
    seen = record_router_inputs(monkeypatch)
    latent = torch.zeros(LATENT)
    out = comfy.sample.sample_custom(patched, comfy.sample.prepare_noise(latent, 0), 5.0,
                                     comfy.samplers.sampler_object("euler"), sigmas, wan_cond(1), wan_cond(2), latent,
                                     disable_pbar=True, seed=0)
    assert torch.isfinite(out).all() and P.find_patch(patched).stats.routed_calls > 0
    assert_same(seen, official_inputs("wan", timesteps, checkpoint_time_mlp(harness, "wan_t2v", "wan")), routers,
                timesteps)


def test_hunyuan_sampled_by_ksampler_with_model_sampling_sd3_shift_5(harness, vorta_comfy, monkeypatch):
    """ComfyUI's own ModelSamplingSD3(shift 5) + KSampler 'simple', 50 steps, gives the official flow-match Euler
    sigmas bit for bit, so a stock workflow routes exactly as the official HunyuanVideo pipeline."""
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    P = vorta_comfy
    model = ModelSamplingSD3().patch(harness.load("hunyuan"), 5.0)[0]
    routers = routers_for("hunyuan")
    patched = P.apply_vorta(model, build_settings(mode="router"), P.RouterBundle(routers, TINY, "random"))
    _, timesteps = hunyuan_flow_euler()
    seen = record_router_inputs(monkeypatch)
    out = harness.sample(patched, LATENT, harness.hunyuan_cond(1, tokens=4), harness.hunyuan_cond(2, tokens=4),
                         steps=50, cfg=1.0, sampler="euler", scheduler="simple")
    assert torch.isfinite(out).all() and P.find_patch(patched).stats.routed_calls > 0
    assert_same(seen, official_inputs("hunyuan", timesteps, checkpoint_time_mlp(harness, "hunyuan", "hunyuan")),
                routers, timesteps)


# the dtype ComfyUI loads the weights in; bf16/fp32 keep the checkpoint's values, fp16/fp8 round them
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind,family", [("wan_t2v", "wan"), ("hunyuan", "hunyuan")])
def test_any_load_dtype_and_the_preview_give_the_official_input(harness, vorta_comfy, monkeypatch, kind, family,
                                                                 dtype):
    """The routing preview runs the adapter's per-step path (the one sampling runs) without sampling; whatever
    dtype the model is loaded in, the input is computed from the stored values upcast: identical to the official
    input where the stored values are the checkpoint's (bf16, fp32), and from the rounded values for fp16/fp8."""
    import comfy.sd

    P = vorta_comfy
    model = comfy.sd.load_diffusion_model(harness.checkpoint(kind), model_options={"dtype": DTYPES[dtype]})
    dm = model.get_model_object("diffusion_model")
    stored = (dm.time_embedding[0] if family == "wan" else dm.time_in.in_layer).weight.dtype
    assert stored == DTYPES[dtype]
    routers = routers_for(family)
    patched = P.apply_vorta(model, build_settings(mode="router"), P.RouterBundle(routers, TINY, "random"))
    sigmas, timesteps = wan_unipc() if family == "wan" else hunyuan_flow_euler()
    seen = record_router_inputs(monkeypatch)
    table, _ = P.preview_table(patched, sigmas)
    exact = dtype in ("bf16", "fp32")
    weights = checkpoint_time_mlp(harness, kind, family) if exact else loaded_time_mlp(model, family)
    want = official_inputs(family, timesteps, weights)
    assert_same(seen, want, routers, timesteps)
    for i in range(50):
        assert torch.equal(table[i], official_decisions(want[i:i + 1], routers.weight, routers.bias)), i
