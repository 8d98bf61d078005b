"""VORTA Calibrate Router in a headless ComfyUI server (``main.py --cpu``): an API prompt calibrates, generates with
the node's ROUTER, and the file it saved in models/vorta is listed by and loads through VORTA Router Loader in a
second prompt."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

from .server import HERE, ROOT, free_port as _free_port, get_json as _get
from .test_server import _post

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


def _wait(url, pid, log_path, timeout=240):
    deadline, entry = time.time() + timeout, None
    while time.time() < deadline:
        hist = _get(f"{url}/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            entry = hist[pid]
            if entry["status"]["completed"] or entry["status"].get("status_str") == "error":
                break
        time.sleep(0.3)
    text = log_path.read_text()
    assert entry is not None, f"prompt did not finish:\n{text[-4000:]}"
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{text[-4000:]}"
    return entry


def test_headless_server_calibrates_saves_and_loads(harness, comfy_paths, tmp_path):
    comfy, stubs = pathlib.Path(comfy_paths[0]), comfy_paths[1]
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "models" / "diffusion_models").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / "ComfyUI-VORTA")
    os.symlink(HERE / "fixture_nodes" / "vorta_test_fixtures", base / "custom_nodes" / "vorta_test_fixtures")
    shutil.copy(harness.checkpoint("wan_t2v"), base / "models" / "diffusion_models" / "tiny_wan_t2v.safetensors")
    env = dict(os.environ)
    if stubs and (pathlib.Path(stubs) / "torchvision").is_dir():
        env["PYTHONPATH"] = stubs + os.pathsep + env.get("PYTHONPATH", "")
    port = _free_port()
    log_path = tmp_path / "server.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
           str(base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfy, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, info = time.time() + 90, None
        while time.time() < deadline and proc.poll() is None:
            try:
                info = _get(f"{url}/object_info/VortaCalibrateRouter", timeout=2)
                break
            except Exception:
                time.sleep(0.3)
        assert info and "VortaCalibrateRouter" in info, f"server did not come up:\n{log_path.read_text()[-4000:]}"
        assert info["VortaCalibrateRouter"]["category"] == "vorta"

        entry = _wait(url, _post(f"{url}/prompt", {"prompt": calibrate_prompt(), "client_id": "t"})["prompt_id"], log_path)
        saved = base / "models" / "vorta" / "calibrated" / "server_wan.safetensors"
        assert saved.is_file(), log_path.read_text()[-3000:]
        assert "7" in entry["outputs"] and "11" in entry["outputs"]  # the report text on the node, the image preview
        assert list((base / "output" / "latents").glob("calibrated*.latent"))
        text = log_path.read_text()
        assert "VORTA (wan, mode=router" in text and "calibrated router saved to" in text, text[-3000:]

        loader = _get(f"{url}/object_info/VortaRouterLoader")["VortaRouterLoader"]
        options = loader["input"]["required"]["router_name"][1]["options"]
        assert "calibrated/server_wan.safetensors" in options
        _wait(url, _post(f"{url}/prompt", {"prompt": loader_prompt("calibrated/server_wan.safetensors"),
                                          "client_id": "t"})["prompt_id"], log_path)
        assert list((base / "output" / "latents").glob("loaded*.latent"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
