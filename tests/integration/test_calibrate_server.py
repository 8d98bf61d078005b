"""VORTA Calibrate Router in a headless ComfyUI server (``main.py --cpu``): the shipped "calibrate, then generate"
example workflow, queued as the editor queues it, calibrates and generates with the node's ROUTER; the file it saved in
models/vorta is listed by and loads through VORTA Router Loader in a second prompt."""
from __future__ import annotations

import json
import pathlib
import shutil

from .server import ROOT, base_folder, comfyui_server, get_json as _get, run_prompt
from .ui_graph import api_prompt

WORKFLOW = ROOT / "example_workflows" / "VORTA Wan2.1 1.3B calibrate.json"
# what differs from the shipped workflow for a tiny random-weight Wan on a CPU: a geometry for its 6x8 token grid
# (the 1.3B preset's tiles are larger than the grid), a coarser knob so both sparse branches are chosen, more sampled
# tiles, three steps
CUSTOM = {"preset": "custom", "tile_t": 1, "tile_h": 2, "tile_w": 2, "window_t": 3, "window_h": 3, "window_w": 3,
          "bucket_t": 1, "bucket_h": 2, "bucket_w": 2, "ratio": 0.5}
CALIBRATE = {**CUSTOM, "max_error": 0.5, "filename": "calibrated/server_wan", "sample_fraction": 0.25}


TINY = {"wan": "tiny_wan_t2v.safetensors", "hunyuan": "tiny_hunyuan.safetensors"}  # in models/diffusion_models


def _apply_defaults():
    from comfyui_vorta.vorta.comfy.setting_specs import APPLY as SPECS

    return {s.name: s.default for s in SPECS}


APPLY = {**_apply_defaults(), "mode": "router"}


def common(family: str = "wan"):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY[family], "weight_dtype": "default"}},
        "4": {"class_type": "VortaTestConditioning", "inputs": {"family": family, "seed": 1, "tokens": 7}},
        "5": {"class_type": "VortaTestConditioning", "inputs": {"family": family, "seed": 2, "tokens": 3}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 128, "height": 96, "length": 17,
                                                                  "batch_size": 1}},
    }


def calibrate_prompt(object_info) -> dict:
    """The example workflow's API prompt with the tiny model: its file in UNETLoader, the test conditioning node for
    each CLIPTextEncode (no text encoder offline), SaveLatent for VAE Decode and the video (no VAE), a small latent,
    three steps and the calibration settings above; every other node, link and value as shipped."""
    prompt = api_prompt(json.loads(WORKFLOW.read_text()), object_info)
    by_type = {}
    for key, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(key)
    for key in by_type.pop("CLIPLoader") + by_type.pop("VAELoader") + by_type.pop("SaveAnimatedWEBP"):
        del prompt[key]
    (unet,), (decode,), (ksampler,) = by_type["UNETLoader"], by_type["VAEDecode"], by_type["KSampler"]
    prompt[unet]["inputs"]["unet_name"] = "tiny_wan_t2v.safetensors"
    for seed, (key, tokens) in enumerate(zip(by_type["CLIPTextEncode"], (7, 3)), start=1):
        prompt[key] = {"class_type": "VortaTestConditioning",
                       "inputs": {"family": "wan", "seed": seed, "tokens": tokens}}
    prompt[decode] = {"class_type": "SaveLatent", "inputs": {"samples": [ksampler, 0],
                                                             "filename_prefix": "latents/calibrated"}}
    prompt[by_type["EmptyHunyuanLatentVideo"][0]]["inputs"].update(width=128, height=96, length=17)
    for key in by_type["KSampler"] + by_type["BasicScheduler"]:
        prompt[key]["inputs"]["steps"] = 3
    prompt[by_type["VortaCalibrateRouter"][0]]["inputs"].update(CALIBRATE)
    return prompt


def loader_prompt(name: str, family: str = "wan"):
    p = common(family)
    p.update({
        "2": {"class_type": "VortaRouterLoader", "inputs": {"router_name": name}},
        "8": {"class_type": "VortaApply", "inputs": {"model": ["1", 0], "router": ["2", 0], **APPLY}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["8", 0], "seed": 1, "steps": 5, "cfg": 3.0,
                                                   "sampler_name": "dpmpp_2m", "scheduler": "beta",
                                                   "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0],
                                                   "denoise": 1.0}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "latents/loaded"}},
    })
    return p


def test_headless_server_calibrates_saves_and_loads(harness, comfy_paths, tmp_path):
    comfy, stubs = pathlib.Path(comfy_paths[0]), comfy_paths[1]
    base = base_folder(tmp_path)
    (base / "models" / "diffusion_models").mkdir(parents=True)
    shutil.copy(harness.checkpoint("wan_t2v"), base / "models" / "diffusion_models" / "tiny_wan_t2v.safetensors")
    log_path = tmp_path / "server.log"
    with comfyui_server(comfy, base, stubs, log_path, ready_path="/object_info/VortaCalibrateRouter") as url:
        object_info = _get(f"{url}/object_info")
        assert object_info["VortaCalibrateRouter"]["category"] == "vorta"

        prompt = calibrate_prompt(object_info)
        calibrate_id = next(k for k, n in prompt.items() if n["class_type"] == "VortaCalibrateRouter")
        preview_id = next(k for k, n in prompt.items() if n["class_type"] == "PreviewImage")
        entry = run_prompt(url, prompt, log_path)
        saved = base / "models" / "vorta" / "calibrated" / "server_wan.safetensors"
        assert saved.is_file(), log_path.read_text()[-3000:]
        assert saved_model(saved) == TINY["wan"]  # named on every ComfyUI (older ones: read from the prompt)
        assert calibrate_id in entry["outputs"] and preview_id in entry["outputs"]  # the report, the image preview
        assert list((base / "output" / "latents").glob("calibrated*.latent"))
        text = log_path.read_text()
        assert "VORTA (wan, mode=auto->router" in text and "calibrated router saved to" in text, text[-3000:]

        # generating again with another seed reuses the calibration (ComfyUI's cache): no second file
        ksampler = next(k for k, n in prompt.items() if n["class_type"] == "KSampler")
        prompt[ksampler]["inputs"]["seed"] += 1
        run_prompt(url, prompt, log_path)
        assert sorted(p.name for p in saved.parent.iterdir()) == ["server_wan.safetensors"]
        assert len(list((base / "output" / "latents").glob("calibrated*.latent"))) == 2

        loader = _get(f"{url}/object_info/VortaRouterLoader")["VortaRouterLoader"]
        options = loader["input"]["required"]["router_name"][1]["options"]
        assert "calibrated/server_wan.safetensors" in options
        run_prompt(url, loader_prompt("calibrated/server_wan.safetensors"), log_path)
        assert list((base / "output" / "latents").glob("loaded*.latent"))


def saved_model(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["model"]


def _defaults(object_info, node: str) -> dict:
    """Every widget input of ``node`` at the default the server declares."""
    spec = object_info[node]["input"]
    return {k: v[1]["default"] for part in ("required", "optional") for k, v in spec.get(part, {}).items()
            if len(v) > 1 and isinstance(v[1], dict) and "default" in v[1]}


def test_headless_server_calibrates_hunyuan_video(harness, comfy_paths, tmp_path):
    """HunyuanVideo (text tokens in the self-attention) through the same server path: a prompt with the node wired as
    a user would (BasicScheduler, KSamplerSelect), the file in models/vorta, listed by and loaded through the Router
    Loader, and generating with it."""
    comfy, stubs = pathlib.Path(comfy_paths[0]), comfy_paths[1]
    base = base_folder(tmp_path)
    (base / "models" / "diffusion_models").mkdir(parents=True)
    shutil.copy(harness.checkpoint("hunyuan"), base / "models" / "diffusion_models" / TINY["hunyuan"])
    log_path = tmp_path / "server.log"
    with comfyui_server(comfy, base, stubs, log_path, ready_path="/object_info/VortaCalibrateRouter") as url:
        object_info = _get(f"{url}/object_info")
        prompt = common("hunyuan")
        prompt.update({
            "11": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 3,
                                                              "denoise": 1.0}},
            "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "13": {"class_type": "VortaCalibrateRouter", "inputs": {
                **_defaults(object_info, "VortaCalibrateRouter"), **CALIBRATE, "filename": "calibrated/server_hunyuan",
                "model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "latent": ["6", 0],
                "sigmas": ["11", 0], "sampler": ["12", 0]}},
            "14": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 1], "filename_prefix": "latents/calibrated"}},
        })
        run_prompt(url, prompt, log_path)
        saved = base / "models" / "vorta" / "calibrated" / "server_hunyuan.safetensors"
        assert saved.is_file(), log_path.read_text()[-3000:]
        assert saved_model(saved) == TINY["hunyuan"]
        assert "calibrated router saved to" in log_path.read_text()

        loader = _get(f"{url}/object_info/VortaRouterLoader")["VortaRouterLoader"]
        assert "calibrated/server_hunyuan.safetensors" in loader["input"]["required"]["router_name"][1]["options"]
        run_prompt(url, loader_prompt("calibrated/server_hunyuan.safetensors", "hunyuan"), log_path)
        assert list((base / "output" / "latents").glob("loaded*.latent"))
        text = log_path.read_text()
        assert "VORTA (hunyuan, mode=router" in text and "no dense fallbacks" in text, text[-3000:]
