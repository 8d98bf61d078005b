"""VORTA Calibrate Router in a headless ComfyUI server (``main.py --cpu``): an API prompt calibrates, generates with
the node's ROUTER, and the file it saved in models/vorta is listed by and loads through VORTA Router Loader in a
second prompt."""
from __future__ import annotations

import pathlib
import shutil

from .server import base_folder, comfyui_server, get_json as _get, run_prompt

CUSTOM = {"preset": "custom", "tile_t": 1, "tile_h": 2, "tile_w": 2, "window_t": 3, "window_h": 3, "window_w": 3,
          "bucket_t": 1, "bucket_h": 2, "bucket_w": 2, "ratio": 0.5}
def _apply_defaults():
    from comfyui_vorta.vorta.comfy.setting_specs import APPLY as SPECS

    return {s.name: s.default for s in SPECS}


APPLY = {**_apply_defaults(), "mode": "router"}


def common():
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan_t2v.safetensors", "weight_dtype": "default"}},
        "4": {"class_type": "VortaTestConditioning", "inputs": {"family": "wan", "seed": 1, "tokens": 7}},
        "5": {"class_type": "VortaTestConditioning", "inputs": {"family": "wan", "seed": 2, "tokens": 3}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 128, "height": 96, "length": 17,
                                                                  "batch_size": 1}},
    }


def calibrate_prompt():
    """Calibrate (BasicScheduler + KSamplerSelect), then Apply VORTA with the node's ROUTER -> KSampler -> SaveLatent."""
    p = common()
    p.update({
        "2": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 3,
                                                         "denoise": 1.0}},
        "3": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "7": {"class_type": "VortaCalibrateRouter", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "latent": ["6", 0], "sigmas": ["2", 0],
            "sampler": ["3", 0], "cfg": 3.0, "noise_seed": 0, "add_noise": True, "max_error": 0.5,
            "filename": "calibrated/server_wan", "sample_fraction": 0.25, **CUSTOM}},
        "8": {"class_type": "VortaApply", "inputs": {"model": ["1", 0], "router": ["7", 0], **APPLY}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["8", 0], "seed": 0, "steps": 3, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "positive": ["4", 0],
                                                   "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "latents/calibrated"}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["7", 3]}},
    })
    return p


def loader_prompt(name: str):
    p = common()
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
        info = _get(f"{url}/object_info/VortaCalibrateRouter")
        assert info["VortaCalibrateRouter"]["category"] == "vorta"

        entry = run_prompt(url, calibrate_prompt(), log_path)
        saved = base / "models" / "vorta" / "calibrated" / "server_wan.safetensors"
        assert saved.is_file(), log_path.read_text()[-3000:]
        assert "7" in entry["outputs"] and "11" in entry["outputs"]  # the report text on the node, the image preview
        assert list((base / "output" / "latents").glob("calibrated*.latent"))
        text = log_path.read_text()
        assert "VORTA (wan, mode=router" in text and "calibrated router saved to" in text, text[-3000:]

        loader = _get(f"{url}/object_info/VortaRouterLoader")["VortaRouterLoader"]
        options = loader["input"]["required"]["router_name"][1]["options"]
        assert "calibrated/server_wan.safetensors" in options
        run_prompt(url, loader_prompt("calibrated/server_wan.safetensors"), log_path)
        assert list((base / "output" / "latents").glob("loaded*.latent"))
