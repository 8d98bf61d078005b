"""One headless run of ComfyUI's server (``main.py --cpu``) executing an API-format prompt with our nodes.

The pack is mounted the way users install it (a folder in ``custom_nodes``, loaded by ComfyUI's own loader);
a test-only node pack (``fixture_nodes/vorta_test_fixtures``) stands in for the text encoders, which are
not available offline.  Everything else -- loader, detection, sampler, wrappers -- is real.
"""
from __future__ import annotations

import pathlib
import shutil
import urllib.parse
import urllib.request

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names
from comfyui_vorta.vorta.router_files import save_safetensors

from .server import ROOT, base_folder, comfyui_server, get_json as _get, run_prompt


def api_prompt():
    """UNETLoader -> Apply VORTA (router) -> KSampler (CFG 3) -> SaveLatent, plus the routing preview."""
    from comfyui_vorta.vorta.comfy.setting_specs import APPLY

    apply_inputs = {**{s.name: s.default for s in APPLY}, "model": ["1", 0], "router": ["2", 0],
                    "settings": ["12", 0], "mode": "auto"}
    geometry = {"preset": "custom", "tile_t": 1, "tile_h": 2, "tile_w": 2, "window_t": 3, "window_h": 3, "window_w": 3,
                "bucket_t": 1, "bucket_h": 2, "bucket_w": 2, "ratio": 0.5, "tau_sparse": 0.3, "switch_percent": 0.5}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan_t2v.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "VortaRouterLoader", "inputs": {"router_name": "tiny_wan.safetensors"}},
        "3": {"class_type": "VortaApply", "inputs": apply_inputs},
        "4": {"class_type": "VortaTestConditioning", "inputs": {"family": "wan", "seed": 1, "tokens": 7}},
        "5": {"class_type": "VortaTestConditioning", "inputs": {"family": "wan", "seed": 2, "tokens": 3}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 80, "height": 64, "length": 9, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": 0, "steps": 3, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "positive": ["4", 0],
                                                   "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "latents/vorta"}},
        "9": {"class_type": "BasicScheduler", "inputs": {"model": ["3", 0], "scheduler": "simple", "steps": 3, "denoise": 1.0}},
        "10": {"class_type": "VortaRoutingPreview", "inputs": {"model": ["3", 0], "sigmas": ["9", 0], "latent": ["6", 0]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
        "12": {"class_type": "VortaSettings", "inputs": geometry},
    }


def test_headless_server_runs_api_prompt_with_vorta(harness, comfy_paths, tmp_path):
    comfy, stubs = pathlib.Path(comfy_paths[0]), comfy_paths[1]
    base = base_folder(tmp_path)
    (base / "models" / "diffusion_models").mkdir(parents=True)
    shutil.copy(harness.checkpoint("wan_t2v"), base / "models" / "diffusion_models" / "tiny_wan_t2v.safetensors")
    r = make_random_routers("wan", official_layer_names("wan", 2), 256, 2, seed=3)
    save_safetensors(r, str(base / "models" / "vorta" / "tiny_wan.safetensors"), VortaConfig(tile=(1, 2, 2)), model="tiny")
    log_path = tmp_path / "server.log"
    with comfyui_server(comfy, base, stubs, log_path) as url:
        loader = _get(f"{url}/object_info/VortaRouterLoader")["VortaRouterLoader"]
        assert "tiny_wan.safetensors" in loader["input"]["required"]["router_name"][1]["options"]

        entry = run_prompt(url, api_prompt(), log_path, timeout=120)
        text = log_path.read_text()
        assert list((base / "output" / "latents").glob("vorta*.latent"))
        assert "VORTA (wan, mode=auto->router preset=custom" in text and "attention FLOPs saved" in text, text[-4000:]
        assert "custom: tile 1x2x2 window 3x3x3 bucket 1x2x2 ratio 0.5" in text, text[-4000:]
        assert "11" in entry["outputs"]  # the routing heat map was rendered
        templates = _get(f"{url}/api/workflow_templates")
        shipped = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
        assert sorted(templates["ComfyUI-VORTA"]) == shipped  # each workflow listed once
        for name in shipped:  # the template browser fetches <name>.json and the card's <name>.jpg
            for ext in ("json", "jpg"):
                quoted = urllib.parse.quote(f"{name}.{ext}")
                with urllib.request.urlopen(f"{url}/api/workflow_templates/ComfyUI-VORTA/{quoted}", timeout=5) as r:
                    assert r.status == 200 and r.read(), (name, ext)
