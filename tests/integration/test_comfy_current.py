"""What moved under the pack between ComfyUI 0.3.64 and 0.38: object patches copied onto other models, the
per-layer preferred attention, core's "Model Sparse Attention" in the override chain, and more model variants.
Each test runs on every tree; where a tree predates a feature the test checks the older behaviour instead."""
from __future__ import annotations

import types

import torch

from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names

WAN = (1, 16, 3, 8, 10)
CUSTOM = dict(preset="custom", tile_t=1, tile_h=2, tile_w=2, bucket_t=1, bucket_h=2, bucket_w=2, backend="torch")


def _bundle(P, seed=3, family="wan"):
    names = official_layer_names("wan", 2) if family == "wan" else official_layer_names("hunyuan", double=2, single=2)
    return P.RouterBundle(make_random_routers(family, names, 256, 2, seed=seed), VortaConfig(tile=(1, 2, 2), bucket=(1, 2, 2)), "random")


def _on_other_model(patcher, other):
    """``patcher`` cloned onto ``other``'s model object, as clone(model_override=...) does (ComfyUI >= 0.15);
    older trees have no such argument, so the same state is made by hand."""
    try:
        return patcher.clone(model_override=other.get_clone_model_override())
    except (TypeError, AttributeError):
        n = patcher.clone()
        n.model = other.model
        return n


def test_patched_forward_runs_the_model_that_is_running(harness, vorta_comfy):
    P = vorta_comfy
    a, b = harness.load("wan_t2v"), harness.load("wan_t2v_b")
    pos, neg = harness.wan_cond(1), harness.wan_cond(2)
    want = harness.sample(b, WAN, pos, neg)
    assert not torch.allclose(want, harness.sample(a, WAN, pos, neg))  # the two models differ
    for mode in ("full", "router"):
        moved = _on_other_model(P.apply_vorta(a, build_settings(mode=mode, **CUSTOM), _bundle(P)), b)
        assert moved.model is b.model
        got = harness.sample(moved, WAN, pos, neg)
        direct = harness.sample(P.apply_vorta(b, build_settings(mode=mode, **CUSTOM), _bundle(P)), WAN, pos, neg)
        assert torch.equal(got, direct), mode  # the old model's self-attention never runs
        if mode == "full":
            assert torch.equal(got, want)


def _core_sparse(calls, previous=None):
    """An override carrying core "Model Sparse Attention"'s markers; it records the heads of each call."""
    def override(func, *args, **kwargs):
        calls.append(kwargs.get("heads", args[3] if len(args) > 3 else None))
        return previous(func, *args, **kwargs) if previous else func(*args, **kwargs)

    override._block_sparse_attention_patch = types.SimpleNamespace(tau=0.5)
    override._block_sparse_attention_previous = previous
    return override


def test_core_sparse_attention_below_vorta_keeps_full_heads_exact(harness, vorta_comfy):
    P = vorta_comfy
    m = harness.load("wan_t2v")
    pos, neg = harness.wan_cond(1), harness.wan_cond(2)
    beneath = []

    def backend(func, *args, **kwargs):  # e.g. SageAttention installed before core's node
        beneath.append(kwargs.get("heads", args[3] if len(args) > 3 else None))
        return func(*args, **kwargs)

    for order in ("core first", "core after"):
        core_calls, beneath[:] = [], []
        settings = build_settings(mode="router", start_percent=0.3, **CUSTOM)
        if order == "core first":
            c = m.clone()
            c.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = backend
            c.model_options["transformer_options"]["optimized_attention_override"] = _core_sparse(core_calls, backend)
            patched = P.apply_vorta(c, settings, _bundle(P))
        else:
            c = m.clone()
            c.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = backend
            patched = P.apply_vorta(c, settings, _bundle(P)).clone()
            to = patched.model_options["transformer_options"]
            to["optimized_attention_override"] = _core_sparse(core_calls, to["optimized_attention_override"])
        harness.sample(patched, WAN, pos, neg, steps=4)
        holder = P.find_patch(patched)
        st = holder.stats
        # routed calls: full heads ran on the backend beneath core's override (1 of 2 heads), never through core
        assert 1 in beneath and st.core_sparse_exact > 0, order
        # steps before start_percent are not routed by VORTA: core keeps them (all heads), cross-attention too
        assert st.core_sparse_kept > 0 and core_calls and set(core_calls) == {2}, (order, core_calls)
        assert holder.last_summary.count("core Model Sparse Attention") == 1, holder.last_summary


def test_preferred_attention_serves_full_heads_where_comfyui_would_use_it(harness, vorta_comfy):
    P = vorta_comfy
    m = harness.load("wan_t2v")
    dm = m.get_model_object("diffusion_model")
    attn = dm.blocks[0].self_attn
    if not hasattr(attn, "comfy_attention"):  # before 0.38 there is no per-layer attention choice
        from comfyui_vorta.vorta.comfy.adapters import WanAdapter

        assert WanAdapter.preferred_attention(attn) is None
        return
    seen = []

    def preferred(q, k, v, heads, **kwargs):  # e.g. comfy-kitchen INT8 set by a checkpoint's attention config
        seen.append(heads)
        import comfy.ldm.modules.attention as A  # called inside ComfyUI's attention wrapper, as a real choice is

        return A.attention_pytorch(q, k, v, heads, **kwargs)

    try:
        for blk in dm.blocks:
            blk.self_attn.comfy_attention.function = preferred
        harness.sample(m, WAN, harness.wan_cond(1), harness.wan_cond(2), steps=2)
        assert seen and set(seen) == {2}  # without VORTA: every call of these layers, all heads
        seen.clear()
        patched = P.apply_vorta(m, build_settings(mode="router", **CUSTOM), _bundle(P))
        harness.sample(patched, WAN, harness.wan_cond(1), harness.wan_cond(2), steps=4)
        assert 1 in seen, seen  # with VORTA: the full heads of mixed layers, through the layer's preferred function
    finally:
        for blk in dm.blocks:
            blk.self_attn.comfy_attention.function = None


def test_wan22_two_experts_and_ti2v_5b_route(harness, vorta_comfy):
    import nodes

    P = vorta_comfy
    high, low = harness.load("wan_t2v"), harness.load("wan_t2v_b")
    hi = P.apply_vorta(high, build_settings(mode="schedule", **CUSTOM))
    lo = P.apply_vorta(low, build_settings(mode="schedule", **CUSTOM))
    pos, neg = harness.wan_cond(1), harness.wan_cond(2)
    latent = {"samples": torch.zeros(WAN)}
    ks = nodes.KSamplerAdvanced()
    first = ks.sample(hi, "enable", 0, 4, 3.0, "euler", "simple", pos, neg, latent, 0, 2, "enable")[0]
    out = ks.sample(lo, "disable", 0, 4, 3.0, "euler", "simple", pos, neg, first, 2, 4, "disable")[0]["samples"]
    assert torch.isfinite(out).all()
    for m in (hi, lo):
        st = P.find_patch(m).stats
        assert st.routed_calls > 0 and not st.fallbacks and sum(st.heads[1:]) > 0, P.find_patch(m).last_summary

    m = harness.load("wan22_5b")
    assert type(m.model).__name__ == "WAN22"
    patched = P.apply_vorta(m, build_settings(mode="schedule", **CUSTOM))
    out = harness.sample(patched, (1, 48, 3, 8, 10), pos, neg)
    st = P.find_patch(patched).stats
    assert torch.isfinite(out).all() and st.routed_calls > 0 and not st.fallbacks, P.find_patch(patched).last_summary


def test_hunyuan_video_15_t2v_and_i2v_route(harness, vorta_comfy):
    import dataclasses

    from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

    P = vorta_comfy
    if "vision_in_dim" not in {f.name for f in dataclasses.fields(HunyuanVideoParams)}:
        return  # HunyuanVideo 1.5 arrived in ComfyUI 0.3.70: nothing to route on this tree
    m = harness.load("hunyuan15")
    assert type(m.model).__name__ == "HunyuanVideo15"
    g = torch.Generator().manual_seed(0)

    def cond(i2v):
        extra = {"conditioning_byt5small": torch.randn(1, 5, 1472, generator=g), "pooled_output": torch.zeros(1, 768)}
        if i2v:
            extra["clip_vision_output"] = types.SimpleNamespace(last_hidden_state=torch.randn(1, 6, 1152, generator=g))
        return [[torch.randn(1, 9, 4096, generator=g), extra]]

    for i2v in (False, True):
        patched = P.apply_vorta(m, build_settings(mode="schedule", **CUSTOM))
        holder = P.find_patch(patched)
        lengths = []
        orig = holder.attention

        def spy(func, *args, **kwargs):
            lengths.append(args[0].shape[2] if kwargs.get("skip_reshape") else args[0].shape[1])
            return orig(func, *args, **kwargs)

        holder.attention = spy
        out = harness.sample(patched, (1, 32, 3, 8, 10), cond(i2v), cond(i2v), cfg=1.0)
        st = holder.stats
        assert torch.isfinite(out).all() and st.routed_calls > 0 and not st.fallbacks, holder.last_summary
        assert set(lengths) == {60 + 9 + 5 + (6 if i2v else 0)}  # grid + prompt + byt5 (+ vision) tokens
