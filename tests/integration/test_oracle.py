"""The patched model samples the same latents as the unpatched model whose self-attention is computed by an
independent oracle (tests/integration/oracle.py) from the token positions ComfyUI reports -- per branch, Wan and
HunyuanVideo (text-last on ComfyUI <= 0.12, text-first from 0.13), with and without padded text."""
from __future__ import annotations

import pytest
import torch

from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names

from oracle import Oracle, Positions, install_oracle

CFG = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(2, 2, 2), ratio=0.5)
LATENT = (1, 16, 5, 12, 14)  # grid 5 x 6 x 7: partial tiles/buckets, a window narrower than the grid
GRID = (5, 6, 7)
CUSTOM = dict(preset="custom", tile_t=1, tile_h=2, tile_w=2, window_t=3, window_h=3, window_w=3, bucket_t=2,
              bucket_h=2, bucket_w=2, ratio=0.5, backend="torch")


def _settings_and_bundle(P, family, mode):
    if mode != "router":
        return build_settings(mode=mode, **CUSTOM), None
    names = official_layer_names("wan", 2) if family == "wan" else official_layer_names("hunyuan", double=2, single=2)
    routers = make_random_routers(family, names, 256, 2, seed=11)
    return build_settings(mode="router", **CUSTOM), P.RouterBundle(routers, CFG, "random")


@pytest.mark.parametrize("mode", ["router", "sliding", "coreset"])
@pytest.mark.parametrize("family,valid", [("wan", None), ("hunyuan", None), ("hunyuan", 17)],
                         ids=["wan", "hunyuan", "hunyuan-padded"])
def test_patched_sampling_equals_independent_oracle(harness, vorta_comfy, family, valid, mode):
    P = vorta_comfy
    kind = "wan_t2v" if family == "wan" else "hunyuan"
    m = harness.load(kind)
    if family == "wan":
        pos, neg, cfg = harness.wan_cond(1), harness.wan_cond(2), 3.0
    else:
        pos, neg, cfg = harness.hunyuan_cond(1, valid=valid), harness.hunyuan_cond(2), 3.0
    settings, bundle = _settings_and_bundle(P, family, mode)
    patched = P.apply_vorta(m, settings, bundle)
    got = harness.sample(patched, LATENT, pos, neg, steps=3, cfg=cfg)
    holder = P.find_patch(patched)
    assert holder.stats.routed_calls > 0 and not holder.stats.fallbacks, holder.last_summary

    dm = m.get_model_object("diffusion_model")
    ms = m.get_model_object("model_sampling")
    plan = holder.plan

    def decisions(sigma, layer):
        return plan.decisions_at(dm, sigma, float(ms.timestep(torch.tensor(sigma))), "cpu").decisions[layer]

    oracle = Oracle(decisions, CFG, "query" if family == "wan" else "key", positions=None)
    if family == "wan":
        def positions(opts, S):
            grid = tuple(int(g) for g in opts.get("grid_sizes", GRID))
            return Positions.raster(grid) if S == grid[0] * grid[1] * grid[2] else None
    else:
        def positions(opts, S):
            ids = oracle.ids
            return Positions.from_rope_ids(ids[0]) if ids is not None and ids.shape[1] == S else None
    oracle.positions = positions
    reference, remove = install_oracle(m, oracle, hunyuan_double=2 if family == "hunyuan" else 0)
    try:
        want = harness.sample(reference, LATENT, pos, neg, steps=3, cfg=cfg)
    finally:
        remove()
    layers = 2 if family == "wan" else 4
    assert oracle.checked >= 3 * layers, oracle.checked
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-3)
