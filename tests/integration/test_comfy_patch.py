"""Apply VORTA on tiny Wan / HunyuanVideo models loaded and sampled by real ComfyUI (CPU)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from comfyui_vorta.vorta.config import BRANCHES, VortaConfig
from comfyui_vorta.vorta.geometry import grid_from_latent
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names, router_input
from comfyui_vorta.vorta.router_files import RouterFileError
from comfyui_vorta.vorta.routing import REFERENCE_BRANCHES, AttentionProblem, routed_attention
from comfyui_vorta.vorta.comfy.options import build_settings

TINY = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(1, 2, 2), ratio=0.5)
WAN = (1, 16, 3, 8, 10)


def wan_bundle(P, seed=0, layers=2):
    r = make_random_routers("wan", official_layer_names("wan", layers), 256, 2, seed=seed)
    return P.RouterBundle(r, TINY, "random-wan")


def hv_bundle(P, seed=0):
    r = make_random_routers("hunyuan", official_layer_names("hunyuan", double=2, single=2), 256, 2, seed=seed)
    return P.RouterBundle(r, TINY, "random-hunyuan")


def spy(P, model):
    """Record every call that reaches our override on this patched model (inputs, output, tag, state)."""
    holder = P.find_patch(model)
    calls = []
    orig = holder.attention

    def attention(func, *args, **kwargs):
        out = orig(func, *args, **kwargs)
        to = kwargs["transformer_options"]
        calls.append(dict(q=args[0].clone(), k=args[1].clone(), v=args[2].clone(), out=out.clone(),
                          heads=kwargs.get("heads", args[3] if len(args) > 3 else None), tag=to.get(P.TAG),
                          state=to.get(P.STATE), sigma=(to.get(P.STATE) or holder.current).sigma, mask=kwargs.get("mask"),
                          layout="hunyuan" if kwargs.get("skip_reshape") else "wan"))
        return out

    holder.attention = attention
    return holder, calls


def expected_decisions(model, bundle, sigma, family):
    dm = model.get_model_object("diffusion_model")
    mlp = dm.time_embedding if family == "wan" else dm.time_in
    t = torch.tensor([sigma], dtype=torch.float32) * 1000.0  # as ComfyUI's model_sampling.timestep
    return bundle.routers.decide(router_input(family, mlp, t), 0.3)


def check_against_reference(calls, model, bundle, family, latent_shape, text_len=0, kv_from="query"):
    grid = grid_from_latent(latent_shape[2:], (1, 2, 2))
    seen = set()
    n_double = 2
    for c in calls:
        kind, idx = c["tag"]
        layer = idx + (n_double if kind == "single" else 0)
        dec = expected_decisions(model, bundle, c["sigma"], family)[layer]
        text_valid = None
        if c["mask"] is not None:
            text_valid = (c["mask"].reshape(-1)[grid.numel:] > -1).sum().reshape(1)
        problem = AttentionProblem(grid, TINY, kv_from=kv_from, text_len=text_len,
                                   text_valid=text_valid)
        exp = routed_attention(c["q"], c["k"], c["v"], c["heads"], dec, problem, layout=c["layout"],
                               branches=REFERENCE_BRANCHES)
        B, S = exp.shape[:2]
        rows = grid.numel + (int(text_valid[0]) if text_valid is not None else text_len)
        got = c["out"].view(B, S, c["heads"], -1)[:, :rows]
        want = exp.view(B, S, c["heads"], -1)[:, :rows]
        for b in range(3):
            heads = torch.nonzero(dec == b).flatten()
            if heads.numel():
                seen.add(BRANCHES[b])
                torch.testing.assert_close(got[:, :, heads], want[:, :, heads], atol=2e-5, rtol=1e-4,
                                           msg=f"branch {BRANCHES[b]} layer {layer} differs from the engine reference")
    return seen


def test_forced_full_equals_unpatched_and_input_untouched(harness, vorta_comfy):
    P = vorta_comfy
    for kind, shape, pos, neg, cfg in (("wan_t2v", WAN, harness.wan_cond(1), harness.wan_cond(2), 3.0),
                                       ("hunyuan", WAN, harness.hunyuan_cond(1), harness.hunyuan_cond(2), 1.0)):
        m = harness.load(kind)
        ref = harness.sample(m, shape, pos, neg, cfg=cfg)
        patched = P.apply_vorta(m, build_settings(mode="full"))
        assert not m.object_patches and not m.get_wrappers("diffusion_model", "vorta")
        out = harness.sample(patched, shape, pos, neg, cfg=cfg)
        assert torch.equal(out, ref), kind
        assert torch.equal(harness.sample(m, shape, pos, neg, cfg=cfg), ref)  # the input model is unchanged
        assert P.find_patch(patched).stats.routed_calls > 0


@pytest.mark.parametrize("latent_shape", [WAN, (1, 16, 3, 9, 11)], ids=["even", "odd-latent"])
def test_wan_router_matches_engine_reference_with_cfg_batch(harness, vorta_comfy, latent_shape):
    P = vorta_comfy
    m = harness.load("wan_t2v")
    bundle = wan_bundle(P, seed=3)
    patched = P.apply_vorta(m, build_settings(mode="router"), bundle)
    holder, calls = spy(P, patched)
    harness.sample(patched, latent_shape, harness.wan_cond(1), harness.wan_cond(2), steps=4, cfg=3.0)
    assert calls and all(c["tag"][0] == "self" for c in calls)  # cross-attention never reaches the override
    assert all(c["q"].shape[0] == 2 for c in calls)  # cond and uncond share one batch
    seen = check_against_reference(calls, m, bundle, "wan", latent_shape)
    assert seen == set(BRANCHES), seen
    assert not holder.stats.fallbacks
    # one routing for the whole batch: each element alone gives the same rows
    c = next(c for c in calls if c["out"].shape[0] == 2)
    dec = expected_decisions(m, bundle, c["sigma"], "wan")[c["tag"][1]]
    problem = AttentionProblem(grid_from_latent(latent_shape[2:]), TINY, kv_from="query")
    for b in range(2):
        one = routed_attention(c["q"][b:b + 1], c["k"][b:b + 1], c["v"][b:b + 1], 2, dec, problem)
        torch.testing.assert_close(c["out"][b:b + 1], one, atol=2e-5, rtol=1e-4)


def test_schedule_mode_switches_branches_by_percent(harness, vorta_comfy):
    P = vorta_comfy
    m = harness.load("wan_t2v")
    s = build_settings(mode="schedule", preset="custom", tile_t=1, tile_h=2, tile_w=2, bucket_t=1, bucket_h=2,
                       bucket_w=2, start_percent=0.2, switch_percent=0.6, dense_blocks="1")
    patched = P.apply_vorta(m, s)
    holder, calls = spy(P, patched)
    harness.sample(patched, WAN, harness.wan_cond(1), harness.wan_cond(2), steps=6, cfg=1.0)
    ms = m.get_model_object("model_sampling")
    start, switch = ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.6)
    by_sigma = {}
    for c in calls:
        st = c["state"].step
        by_sigma.setdefault(round(c["sigma"], 5), st.decisions)
    assert len(by_sigma) == 6
    for sigma, dec in by_sigma.items():
        assert (dec[1] == 0).all()  # dense block
        want = 0 if sigma > start + 1e-6 else (1 if sigma > switch + 1e-6 else 2)
        assert (dec[0] == want).all(), (sigma, dec[0], want)
    assert {int(d[0, 0]) for d in by_sigma.values()} == {0, 1, 2}


def test_wan_i2v_and_vace_variants(harness, vorta_comfy):
    P = vorta_comfy
    # I2V: image + text cross-attention go to the backend; self-attention is routed
    m = harness.load("wan_i2v")
    assert type(m.model).__name__ == "WAN21" and m.model.diffusion_model.img_emb is not None
    bundle = wan_bundle(P, seed=5)
    patched = P.apply_vorta(m, build_settings(mode="router"), bundle)
    holder, calls = spy(P, patched)
    out = harness.sample(patched, WAN, harness.wan_cond(1, clip_vision=True), harness.wan_cond(2, clip_vision=True))
    assert torch.isfinite(out).all() and calls and not holder.stats.fallbacks
    check_against_reference(calls, m, bundle, "wan", WAN)

    # VACE: the vace blocks are tagged too; forced sliding routes them, router mode keeps them dense
    m = harness.load("wan_vace")
    assert type(m.model.diffusion_model).__name__ == "VaceWanModel"
    patched = P.apply_vorta(m, build_settings(mode="sliding", preset="custom", tile_t=1, tile_h=2, tile_w=2))
    holder, calls = spy(P, patched)
    out = harness.sample(patched, WAN, harness.wan_cond(1), harness.wan_cond(2))
    assert torch.isfinite(out).all()
    vace = [c for c in calls if c["tag"][0] == "vace"]
    assert vace and all(c["state"].step.vace_counts == [0, 0, 2] for c in vace)
    problem = AttentionProblem(grid_from_latent(WAN[2:]), dataclasses.replace(TINY, bucket=(2, 3, 2)), kv_from="query")
    c = vace[0]
    torch.testing.assert_close(c["out"], routed_attention(c["q"], c["k"], c["v"], 2, torch.tensor([2, 2]), problem),
                               atol=2e-5, rtol=1e-4)
    routed = P.apply_vorta(m, build_settings(mode="router"), wan_bundle(P, seed=5))
    holder, calls = spy(P, routed)
    harness.sample(routed, WAN, harness.wan_cond(1), harness.wan_cond(2), steps=2)
    assert all(c["state"].step.vace_counts == [2, 0, 0] for c in calls if c["tag"][0] == "vace")


def test_previous_override_is_chained(harness, vorta_comfy):
    P = vorta_comfy
    m = harness.load("wan_t2v")
    seen_heads = []

    def previous(func, *args, **kwargs):  # e.g. a SageAttention patch installed before ours
        seen_heads.append(kwargs.get("heads"))
        return func(*args, **kwargs)

    prev = m.clone()
    prev.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = previous
    ref = harness.sample(prev, WAN, harness.wan_cond(1), harness.wan_cond(2))
    calls_without = len(seen_heads)
    seen_heads.clear()
    out = harness.sample(P.apply_vorta(prev, build_settings(mode="full")), WAN, harness.wan_cond(1), harness.wan_cond(2))
    assert torch.equal(out, ref) and len(seen_heads) == calls_without  # self + cross attention all on the previous backend
    seen_heads.clear()
    patched = P.apply_vorta(prev, build_settings(mode="router"), wan_bundle(P, seed=3))
    harness.sample(patched, WAN, harness.wan_cond(1), harness.wan_cond(2), steps=4)
    assert 1 in seen_heads  # full heads of a mixed layer ran on the previous override, one head at a time
    assert P.find_patch(patched).stats.routed_calls > 0


def test_patches_applied_after_ours_still_route(harness, vorta_comfy):
    P = vorta_comfy
    m = harness.load("wan_t2v")
    patched = P.apply_vorta(m, build_settings(mode="router"), wan_bundle(P, seed=3))
    later = patched.clone()
    hits = []

    def overwrite(func, *args, **kwargs):  # a later node that overwrites the override slot (KJNodes-style)
        hits.append(kwargs.get("heads"))
        return func(*args, **kwargs)

    later.model_options["transformer_options"]["optimized_attention_override"] = overwrite

    def block_replace(args, extra):  # a later dit block patch that drops transformer_options (TeaCache-style)
        return extra["original_block"]({**args, "transformer_options": {}})

    later.set_model_patch_replace(block_replace, "dit", "double_block", 0)
    holder, calls = spy(P, later)
    out = harness.sample(later, WAN, harness.wan_cond(1), harness.wan_cond(2), steps=4)
    assert torch.isfinite(out).all()
    assert {c["tag"] for c in calls} == {("self", 0), ("self", 1)}  # both blocks still routed
    assert holder.stats.routed_calls == 8 and not holder.stats.fallbacks
    assert hits  # the later override still serves cross-attention and full heads
    check_against_reference(calls, m, wan_bundle(P, seed=3), "wan", WAN)


@pytest.mark.parametrize("valid", [None, 20], ids=["no-mask", "padded-text"])
def test_hunyuan_router_with_text_tokens(harness, vorta_comfy, valid):
    P = vorta_comfy
    m = harness.load("hunyuan")
    bundle = hv_bundle(P, seed=1)
    patched = P.apply_vorta(m, build_settings(mode="router"), bundle)
    holder, calls = spy(P, patched)
    out = harness.sample(patched, WAN, harness.hunyuan_cond(1, valid=valid), harness.hunyuan_cond(2), cfg=1.0, steps=4)
    assert torch.isfinite(out).all()
    assert {c["tag"][0] for c in calls} == {"double", "single"}  # the token refiner is never routed
    assert all(c["q"].shape[2] == 3 * 4 * 5 + 24 for c in calls)
    assert not holder.stats.fallbacks
    # numerics against an independent oracle from ComfyUI's own token positions: test_oracle.py
    seen = {int(b) for c in calls for b in c["state"].step.decisions.flatten()}
    assert seen >= {1, 2}


def test_router_validation_and_errors(harness, vorta_comfy):
    P = vorta_comfy
    m = harness.load("wan_t2v")
    with pytest.raises(RouterFileError, match="does not fit this model.*3 routed layers vs 2"):
        P.apply_vorta(m, build_settings(mode="router"), wan_bundle(P, layers=3))
    with pytest.raises(RouterFileError, match="hunyuan router but the model is wan"):
        P.apply_vorta(m, build_settings(mode="router"), hv_bundle(P))
    with pytest.raises(ValueError, match="needs a ROUTER"):
        P.apply_vorta(m, build_settings(mode="router"))
    with pytest.raises(ValueError, match=r"dense blocks \[5\] do not exist"):
        P.apply_vorta(m, build_settings(mode="schedule", dense_blocks="0,5"))
