"""The README's install paths in ComfyUI's own server (``main.py --cpu``), with the official router file dropped in.

The pack is a real folder in ``custom_nodes`` holding what an install holds, not a link to this checkout: for
``git clone``, the files git tracks; for ComfyUI Manager and comfy-cli (the registry archive), the same without what
``.comfyignore`` leaves out.  Nothing is pip-installed: ``requirements.txt`` lists only what ComfyUI itself already
needs.  The official ``router.pt`` goes into ``models/vorta`` as it comes, once in the official folder layout with
its ``config.json`` and once alone under another name.  The nodes load (ComfyUI's "Import times" list shows the pack
and no IMPORT FAILED), the Router Loader lists both files, and a prompt generates with one of them.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess

import pytest
import torch

from test_router_files import official_state

from .server import HERE, ROOT, comfyui_server, get_json as _get, run_prompt
from .test_calibrate_server import loader_prompt

OFFICIAL_DIR = "wan-14B/train/ckpt/step-000100"  # the layout of the Hugging Face repository Wenhao-Sun/VORTA


def tracked_files() -> list:
    """What ``git clone`` of this checkout gets (the index, with the working tree's contents)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: {out.stderr.strip()}")
    return [f for f in out.stdout.split("\0") if f and (ROOT / f).is_file()]


def registry_files(files: list) -> list:
    """The registry archive: tracked files without the ``.comfyignore`` patterns (folders end in '/')."""
    patterns = [p.strip() for p in (ROOT / ".comfyignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(path.startswith(p) if p.endswith("/") else fnmatch.fnmatch(path, p) for p in patterns)

    return [f for f in files if not ignored(f)]


def install(files: list, custom_nodes: pathlib.Path) -> pathlib.Path:
    dst = custom_nodes / "ComfyUI-VORTA"
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    return dst


@pytest.mark.parametrize("how", ["git clone", "registry archive"])
def test_installed_pack_loads_and_uses_the_official_router_file(how, harness, comfy_paths, tmp_path):
    comfy, stubs = pathlib.Path(comfy_paths[0]), comfy_paths[1]
    files = tracked_files()
    if how == "registry archive":
        files = registry_files(files)
        assert not [f for f in files if f.startswith(("tests/", "bench/", "tools/"))]
    for line in (ROOT / "requirements.txt").read_text().splitlines():  # already there with ComfyUI
        name = re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0]
        if name and not name.startswith("#"):
            assert importlib.util.find_spec(name.replace("-", "_")) is not None, f"{name} is not installed"

    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    pack = install(files, base / "custom_nodes")
    assert not pack.is_symlink() and (pack / "__init__.py").is_file()
    (base / "custom_nodes" / "vorta_test_fixtures").symlink_to(HERE / "fixture_nodes" / "vorta_test_fixtures")
    (base / "models" / "diffusion_models").mkdir(parents=True)
    shutil.copy(harness.checkpoint("wan_t2v"), base / "models" / "diffusion_models" / "tiny_wan_t2v.safetensors")
    # the official files, shaped for the tiny Wan (2 blocks, 2 heads, width 256)
    vorta = base / "models" / "vorta"
    (vorta / OFFICIAL_DIR).mkdir(parents=True)
    torch.save(official_state("wan", layers=2, heads=2, dim=256), vorta / OFFICIAL_DIR / "router.pt")
    (vorta / "wan-14B" / "train" / "config.json").write_text(json.dumps({"self_attention_kwargs": {
        "tile_size": [1, 2, 2], "window_size": [3, 3, 3], "lowres_window_size": [1, 2, 2],
        "lowres_reduction_rate": 0.5}}))
    shutil.copy(vorta / OFFICIAL_DIR / "router.pt", vorta / "vorta_wan2.1_t2v_14b_router.pt")

    log_path = tmp_path / "server.log"
    with comfyui_server(comfy, base, stubs, log_path) as url:
        text = log_path.read_text()
        times = re.findall(r"(\d+\.\d) seconds( \(IMPORT FAILED\))?: (.*)", text)
        ours = [(seconds, failed) for seconds, failed, path in times if path.strip() == str(pack)]
        assert ours and not ours[0][1], text[-4000:]
        print(f"{how}: ComfyUI's import time for the pack: {ours[0][0]} s")  # one decimal; test_startup.py measures
        nodes = _get(f"{url}/object_info")
        assert {"VortaRouterLoader", "VortaSettings", "VortaApply", "VortaRoutingPreview",
                "VortaCalibrateRouter"} <= set(nodes)
        options = nodes["VortaRouterLoader"]["input"]["required"]["router_name"][1]["options"]
        assert {f"{OFFICIAL_DIR}/router.pt", "vorta_wan2.1_t2v_14b_router.pt"} <= set(options), options

        run_prompt(url, loader_prompt(f"{OFFICIAL_DIR}/router.pt"), log_path)
        assert list((base / "output" / "latents").glob("loaded*.latent"))
        text = log_path.read_text()
        assert "VORTA (wan, mode=router" in text and "tile 1x2x2" in text, text[-4000:]
