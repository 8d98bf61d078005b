"""Every node in the shipped workflows exists in real ComfyUI (core + extras + ours) and every widget value is valid."""
import asyncio
import json
import pathlib

import pytest

from .ui_graph import FRONTEND_ONLY, widgets as widget_list

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry(comfy):
    import nodes
    import comfyui_vorta

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    reg = dict(nodes.NODE_CLASS_MAPPINGS)
    ext = asyncio.run(comfyui_vorta.comfy_entrypoint())
    for n in asyncio.run(ext.get_node_list()):
        reg[n.define_schema().node_id] = n
    return reg


FILE_LISTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "router_name"}


@pytest.mark.parametrize("path", sorted((ROOT / "example_workflows").glob("*.json")), ids=lambda p: p.stem)
def test_workflow_nodes_and_widgets_exist_in_comfyui(registry, path):
    import folder_paths

    wf = json.loads(path.read_text())
    for n in wf["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        assert n["type"] in registry, f"{path.name}: unknown node {n['type']}"
        widgets = widget_list(registry[n["type"]].INPUT_TYPES())
        for m in n.get("properties", {}).get("models", []):  # download entries name a folder ComfyUI knows
            assert m["directory"] in folder_paths.folder_names_and_paths, (path.name, m)
        values = n["widgets_values"]
        assert len(values) == len(widgets), (path.name, n["type"], [w[0] for w in widgets], values)
        for (name, spec_), v in zip(widgets, values):
            t, opts = spec_[0], (spec_[1] if len(spec_) > 1 else {})
            if t == "COMBO":
                t = opts.get("options", [])
            if isinstance(t, list):
                if name in FILE_LISTS:
                    assert isinstance(v, str) and v, (n["type"], name, v)
                else:
                    assert v in t, (path.name, n["type"], name, v, t)
            elif t in ("INT", "FLOAT"):
                assert isinstance(v, (int, float)) and not isinstance(v, bool), (n["type"], name, v)
                if "min" in opts:
                    assert v >= opts["min"], (n["type"], name, v)
                if "max" in opts:
                    assert v <= opts["max"], (n["type"], name, v)
                if t == "INT":
                    assert int(v) == v
            elif t == "BOOLEAN":
                assert isinstance(v, bool)
            elif t == "STRING":
                assert isinstance(v, str)
