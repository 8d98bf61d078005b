"""The shipped UI-format workflows: valid graphs, only core nodes plus ours, valid VORTA widget values.

The full check of every core node's widgets against ComfyUI's own definitions is in
tests/integration/test_workflows_comfy.py (needs COMFYUI_PATH)."""
import inspect
import json
import pathlib

import pytest

from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.comfy.settings import BACKENDS, MODES, PRESET_CHOICES

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
# VortaApply: the settings, then audit_heads
OURS = {"VortaRouterLoader": 1, "VortaApply": len(inspect.signature(build_settings).parameters) + 1,
        "VortaRoutingPreview": 0}
# core node types the workflows use, with their widget counts (KSampler: seed + control_after_generate + 5)
CORE = {"UNETLoader": 2, "CLIPLoader": 3, "DualCLIPLoader": 4, "VAELoader": 1, "ModelSamplingSD3": 1,
        "CLIPTextEncode": 1, "FluxGuidance": 1, "EmptyHunyuanLatentVideo": 4, "KSampler": 7, "VAEDecode": 0,
        "SaveAnimatedWEBP": 5, "BasicScheduler": 3, "PreviewImage": 0, "Note": 1, "MarkdownNote": 1}


def test_three_workflows_shipped_in_both_folders():
    names = {p.name for p in WORKFLOWS}
    assert names == {"vorta_wan2.1_t2v_14b_router.json", "vorta_hunyuanvideo_t2v_router.json",
                     "vorta_wan2.1_t2v_1.3b_schedule.json"}
    for p in WORKFLOWS:
        assert (ROOT / "workflows" / p.name).read_text() == p.read_text()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_graph_is_consistent(path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] >= max(nodes) and wf["last_link_id"] >= max(l[0] for l in wf["links"])
    for n in nodes.values():
        assert n["type"] in OURS or n["type"] in CORE, f"{path.name}: node type {n['type']} is neither core nor ours"
        expected = {**CORE, **OURS}[n["type"]]
        assert len(n.get("widgets_values", [])) == expected, (path.name, n["type"], n.get("widgets_values"))
    for lid, src, src_slot, dst, dst_slot, typ in wf["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == typ and lid in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == lid and nodes[dst]["inputs"][dst_slot]["type"] == typ
    for n in nodes.values():  # every required socket is connected
        for inp in n["inputs"]:
            if inp["name"] not in ("router", "latent"):
                assert inp["link"] is not None, (path.name, n["type"], inp["name"])
    assert any(n["type"] == "Note" and "models/vorta" in n["widgets_values"][0] or "router" not in path.stem
               for n in nodes.values())
    assert any(n["type"] == "Note" for n in nodes.values())


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_vorta_widget_values_are_valid(path):
    wf = json.loads(path.read_text())
    for n in wf["nodes"]:
        if n["type"] == "VortaApply":
            names = list(inspect.signature(build_settings).parameters)
            values = dict(zip(names, n["widgets_values"]))
            assert values["mode"] in MODES and values["preset"] in PRESET_CHOICES and values["backend"] in BACKENDS
            s = build_settings(**values)  # raises on any invalid value (dense blocks, percents, ...)
            has_router = any(i["name"] == "router" and i["link"] is not None for i in n["inputs"])
            assert (s.mode == "router") == has_router, "router mode needs a connected ROUTER, other modes none"
        if n["type"] == "VortaRouterLoader":
            assert n["widgets_values"][0].endswith((".safetensors", ".pt"))
