"""The example workflows: one folder, equal to what tools/build_workflows.py writes, valid graphs with download
entries, one-column notes and a thumbnail per template.

The check of every core node's widgets against ComfyUI's own definitions is in
tests/integration/test_workflows_comfy.py (needs COMFYUI_PATH)."""
import importlib.util
import io
import json
import pathlib
import sys

import pytest

from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.comfy.setting_specs import APPLY, CALIBRATE, GEOMETRY

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDER = ROOT / "example_workflows"
WORKFLOWS = sorted(FOLDER.glob("*.json"))


def _generator():
    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "tools" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
OURS = {"VortaRouterLoader": 1, "VortaApply": len(APPLY), "VortaSettings": len(GEOMETRY), "VortaRoutingPreview": 0,
        "VortaCalibrateRouter": len(CALIBRATE) + 1}  # + the seed's control widget
# core node types the workflows use, with their widget counts (KSampler: seed + control_after_generate + 5)
CORE = {"UNETLoader": 2, "CLIPLoader": 3, "DualCLIPLoader": 4, "VAELoader": 1, "ModelSamplingSD3": 1,
        "CLIPTextEncode": 1, "FluxGuidance": 1, "EmptyHunyuanLatentVideo": 4, "Wan22ImageToVideoLatent": 4,
        "KSampler": 7, "VAEDecode": 0, "SaveAnimatedWEBP": 5, "BasicScheduler": 3, "PreviewImage": 0,
        "MarkdownNote": 1, "KSamplerSelect": 1}
# loader -> (widget index, ComfyUI model folder) for each file it names
LOADERS = {"UNETLoader": [(0, "diffusion_models")], "CLIPLoader": [(0, "text_encoders")],
           "DualCLIPLoader": [(0, "text_encoders"), (1, "text_encoders")], "VAELoader": [(0, "vae")],
           "VortaRouterLoader": [(0, "vorta")]}
UNCONNECTED_OK = {"router", "settings", "latent", "start_image"}  # optional sockets


def test_one_folder_equal_to_the_generator_output():
    """example_workflows/ holds exactly what the generator writes (thumbnails: same size and, within JPEG
    encoder differences between Pillow versions, the same pixels); there is no second workflow folder."""
    from PIL import Image, ImageChops, ImageStat

    assert not (ROOT / "workflows").exists(), "ComfyUI lists every workflow folder: keep only example_workflows/"
    files = GENERATOR.render()
    assert {p.name for p in FOLDER.iterdir()} == set(files), "run: python tools/build_workflows.py"
    for name, data in files.items():
        if name.endswith(".json"):
            assert (FOLDER / name).read_bytes() == data, f"{name} differs; run: python tools/build_workflows.py"
        else:
            committed, fresh = Image.open(FOLDER / name), Image.open(io.BytesIO(data))
            assert committed.format == "JPEG" and committed.size == fresh.size == GENERATOR.THUMB_SIZE
            diff = ImageStat.Stat(ImageChops.difference(committed.convert("RGB"), fresh.convert("RGB"))).mean
            assert max(diff) < 2.0, (name, diff)
    stems = {p.stem for p in WORKFLOWS}
    assert stems == {p.stem for p in FOLDER.glob("*.jpg")}, "one thumbnail per template"
    assert any("Wan2.2" in s for s in stems) and any("HunyuanVideo" in s for s in stems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_graph_is_consistent(path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] >= max(nodes) and wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for n in nodes.values():
        assert n["type"] in OURS or n["type"] in CORE, f"{path.name}: node type {n['type']} is neither core nor ours"
        assert len(n.get("widgets_values", [])) == {**CORE, **OURS}[n["type"]], (path.name, n["type"])
    for lid, src, src_slot, dst, dst_slot, typ in wf["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == typ and lid in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == lid and nodes[dst]["inputs"][dst_slot]["type"] == typ
    for n in nodes.values():  # every required socket is connected
        for inp in n["inputs"]:
            if inp["name"] not in UNCONNECTED_OK:
                assert inp["link"] is not None, (path.name, n["type"], inp["name"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_model_file_has_a_download_entry(path):
    """properties.models on each loader: the widget's file name, the folder ComfyUI looks in, and an https URL on
    Hugging Face whose name ends like a model file (what the frontend needs to offer the download)."""
    wf = json.loads(path.read_text())
    for n in wf["nodes"]:
        for index, directory in LOADERS.get(n["type"], []):
            name = n["widgets_values"][index]
            entries = [m for m in n["properties"].get("models", []) if m["name"] == name]
            assert len(entries) == 1, (path.name, n["type"], name)
            m = entries[0]
            assert m["directory"] == directory, (name, m)
            assert m["url"].startswith("https://huggingface.co/") and "/resolve/main/" in m["url"], m
            assert name.endswith((".safetensors", ".pt")) and m["url"].endswith((".safetensors", ".pt")), m
            if directory == "vorta":
                assert m["url"].startswith("https://huggingface.co/Wenhao-Sun/VORTA/"), m
            else:
                assert m["url"].startswith("https://huggingface.co/Comfy-Org/") and m["url"].endswith("/" + name), m


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_note_is_one_readable_column(path):
    """One Markdown note: no column alignment (runs of spaces wrap unreadably at the default node width), names
    the folders of every file, and never sends people to a command that a normal install cannot run."""
    wf = json.loads(path.read_text())
    notes = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    assert "   " not in text and "\t" not in text
    assert "python -m" not in text
    for n in wf["nodes"]:
        for index, directory in LOADERS.get(n["type"], []):
            assert f"models/{directory}/` {n['widgets_values'][index]}" in text, (path.name, directory)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_vorta_widget_values_are_valid(path):
    """Our nodes' widget values, named by the setting declarations, build valid settings; mode 'auto' resolves to the
    router exactly where one is connected."""
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf["links"]}
    for n in wf["nodes"]:
        if n["type"] == "VortaApply":
            values = dict(zip([s.name for s in APPLY], n["widgets_values"]))
            linked = {i["name"]: nodes[links[i["link"]][1]] for i in n["inputs"] if i["link"] is not None}
            if "settings" in linked:
                values.update(zip([s.name for s in GEOMETRY], linked["settings"]["widgets_values"]))
            s = build_settings(**values).resolved(has_router="router" in linked)  # raises on any invalid value
            assert values["mode"] == "auto" and s.auto_mode
            assert (s.mode == "router") == ("router" in linked)


def _named(specs, values) -> dict:
    """Widget values by input name (a seed's control widget dropped)."""
    names = [n for s in specs for n in ((s.name, None) if s.control_after_generate else (s.name,))]
    return {n: v for n, v in zip(names, values, strict=True) if n is not None}


def test_calibrate_then_generate_workflow():
    """The calibration example: VORTA Calibrate Router's ROUTER drives Apply VORTA for the KSampler, and the calibration
    runs what the KSampler runs (model after the shift, prompts, latent, seed, CFG, sampler, scheduler, steps), with
    valid widget values; no router file is needed."""
    paths = [p for p in WORKFLOWS
             if any(n["type"] == "VortaCalibrateRouter" for n in json.loads(p.read_text())["nodes"])]
    assert len(paths) == 1
    wf = json.loads(paths[0].read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    of_type = {n["type"]: n for n in wf["nodes"]}
    assert "VortaRouterLoader" not in of_type
    src = {(link[3], nodes[link[3]]["inputs"][link[4]]["name"]): nodes[link[1]] for link in wf["links"]}
    src_slot = {(link[3], nodes[link[3]]["inputs"][link[4]]["name"]): link[2] for link in wf["links"]}
    cal, apply, ks = of_type["VortaCalibrateRouter"], of_type["VortaApply"], of_type["KSampler"]
    assert src[apply["id"], "router"] is cal and src_slot[apply["id"], "router"] == 0
    assert src[ks["id"], "model"] is apply
    for a, b in (("positive", "positive"), ("negative", "negative"), ("latent", "latent_image")):
        assert src[cal["id"], a] is src[ks["id"], b], a
    assert src[cal["id"], "model"] is src[apply["id"], "model"]  # the same (shifted) model is calibrated and routed
    values = _named(CALIBRATE, cal["widgets_values"])
    for spec in CALIBRATE:
        spec.check(values[spec.name])
    seed, _, steps, cfg, sampler_name, scheduler, denoise = ks["widgets_values"]
    assert (values["noise_seed"], values["cfg"], values["add_noise"]) == (seed, cfg, True)
    assert src[cal["id"], "sampler"]["widgets_values"] == [sampler_name]
    sched = src[cal["id"], "sigmas"]
    assert sched["type"] == "BasicScheduler" and sched["widgets_values"] == [scheduler, steps, denoise]
    assert src[sched["id"], "model"] is src[cal["id"], "model"]
    assert values["filename"].startswith("calibrated/") and values["preset"] == "auto"
