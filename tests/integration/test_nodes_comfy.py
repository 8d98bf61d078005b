"""The three V3 nodes through ComfyUI's own node API: folder registration, loader, apply, preview."""
from __future__ import annotations

import asyncio
import shutil

import pytest
import torch

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names
from comfyui_vorta.vorta.router_files import ROUTER_EXTENSIONS, save_safetensors


@pytest.fixture(scope="module")
def pack(comfy):
    import comfyui_vorta

    ext = asyncio.run(comfyui_vorta.comfy_entrypoint())
    return {n.define_schema().node_id: n for n in asyncio.run(ext.get_node_list())}


def test_node_schemas_have_prefixed_ids_and_tooltips(pack):
    assert set(pack) == {"VortaRouterLoader", "VortaSettings", "VortaApply", "VortaRoutingPreview", "VortaCalibrateRouter"}
    for node in pack.values():
        schema = node.define_schema()
        assert schema.category.startswith("vorta")
        for inp in schema.inputs:
            assert inp.tooltip, (schema.node_id, inp.id)


def test_router_folder_keeps_extra_paths_and_loads_both_formats(pack, tmp_path):
    import folder_paths

    extra = tmp_path / "extra_vorta"
    (extra / "wan-14B" / "train" / "ckpt" / "step-000100").mkdir(parents=True)
    folder_paths.folder_names_and_paths["vorta"] = ([str(extra)], set())  # as extra_model_paths.yaml leaves it
    r = make_random_routers("wan", official_layer_names("wan", 2), 256, 2, seed=0)
    save_safetensors(r, str(extra / "tiny.safetensors"), VortaConfig(tile=(1, 2, 2)), model="tiny-wan")
    official = extra / "wan-14B" / "train" / "ckpt" / "step-000100" / "router.pt"
    torch.save({f"{n}.router.linear.{p}": getattr(r, p if p == "bias" else "weight")[i]
                for i, n in enumerate(r.layer_names) for p in ("weight", "bias")}, official)
    (extra / "wan-14B" / "train" / "config.json").write_text(
        '{"self_attention_kwargs": {"tile_size": [5, 9, 8], "window_size": [3, 3, 3], '
        '"lowres_window_size": [2, 3, 2], "lowres_reduction_rate": 0.5}}')
    (extra / "notes.txt").write_text("not a router")
    for name in ("upper.PT", "other.bin"):  # every extension the loader accepts is listed, in any case
        shutil.copy(official, extra / name)
    loader = pack["VortaRouterLoader"]
    options = loader.define_schema().inputs[0].options
    paths, exts = folder_paths.folder_names_and_paths["vorta"]
    assert str(extra) in paths and exts == set(ROUTER_EXTENSIONS)
    assert {"tiny.safetensors", "upper.PT", "other.bin"} <= set(options) and "notes.txt" not in options
    for name in ("upper.PT", "other.bin"):
        assert torch.equal(loader.execute(router_name=name).result[0].routers.weight, r.weight)
    pt_name = next(o for o in options if o.endswith("router.pt"))
    bundle = loader.execute(router_name="tiny.safetensors").result[0]
    assert bundle.routers.num_layers == 2 and bundle.trained_with.tile == (1, 2, 2)
    official_bundle = loader.execute(router_name=pt_name).result[0]
    assert torch.equal(official_bundle.routers.weight, bundle.routers.weight)
    assert official_bundle.trained_with.tile == (5, 9, 8)


def test_apply_and_preview_nodes(pack, harness):
    import comfy.samplers

    m = harness.load("wan_t2v")
    r = make_random_routers("wan", official_layer_names("wan", 2), 256, 2, seed=3)
    from comfyui_vorta.vorta.comfy.install import find_patch
    from comfyui_vorta.vorta.comfy.plan import RouterBundle

    bundle = RouterBundle(r, VortaConfig(tile=(1, 2, 2), bucket=(1, 2, 2)), "random")
    apply = pack["VortaApply"]
    defaults = {i.id: i.default for i in apply.define_schema().inputs if getattr(i, "default", None) is not None}
    patched = apply.execute(model=m, router=bundle, **{**defaults, "dense_blocks": "1"}).result[0]
    assert patched is not m and find_patch(patched) is not None and find_patch(m) is None
    with pytest.raises(ValueError, match="cannot read"):
        apply.execute(model=m, router=bundle, **{**defaults, "dense_blocks": "x"})

    sigmas = comfy.samplers.calculate_sigmas(m.get_model_object("model_sampling"), "simple", 5)
    image, text = pack["VortaRoutingPreview"].execute(model=patched, sigmas=sigmas,
                                                      latent={"samples": torch.zeros(1, 16, 3, 8, 10)}).result
    assert image.shape[0] == 1 and image.shape[-1] == 3 and "attention FLOPs" in text and "step 4:" in text
    assert "mode=auto->router preset=auto" in text  # what auto resolved to
    assert "router training settings: tile 1x2x2 window 3x3x3 bucket 1x2x2 ratio 0.5" in text

    # the preview shows exactly the decisions sampling uses
    from comfyui_vorta.vorta.comfy.preview import preview_table

    table, _ = preview_table(patched, sigmas)
    assert (table[:, 1] == 0).all()  # dense block 1
    holder = find_patch(patched)
    used = {}
    orig = holder.attention

    def spy(func, *args, **kwargs):
        st = kwargs["transformer_options"]["vorta_state"]
        used[round(st.sigma, 5)] = st.step.decisions
        return orig(func, *args, **kwargs)

    holder.attention = spy
    harness.sample(patched, (1, 16, 3, 8, 10), harness.wan_cond(1), harness.wan_cond(2), steps=5)
    assert [torch.equal(used[round(float(s), 5)], table[i]) for i, s in enumerate(sigmas[:-1])] == [True] * 5
    # VORTA Settings plugs into Apply VORTA; without a router, auto runs the schedule
    geometry = pack["VortaSettings"]
    g_defaults = {i.id: i.default for i in geometry.define_schema().inputs}
    chosen = geometry.execute(**{**g_defaults, "preset": "wan2.1-1.3b-480p", "switch_percent": 0.3}).result[0]
    scheduled = apply.execute(model=m, settings=chosen, **defaults).result[0]
    s = find_patch(scheduled).settings
    assert s.mode == "schedule" and s.auto_mode and s.preset == "wan2.1-1.3b-480p" and s.switch_percent == 0.3
    with pytest.raises(ValueError, match="ratio"):
        geometry.execute(**{**g_defaults, "ratio": 2.0})
    # a plain model + ROUTER works too
    table2, _ = preview_table(m, sigmas, bundle=bundle)
    assert table2.shape == (5, 2, 2)
