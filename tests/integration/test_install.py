"""The README's install paths in ComfyUI's own server (``main.py --cpu``), with the official router file dropped in.

The pack is a real folder in ``custom_nodes`` holding what an install holds, under the name that install gives it:
for ``git clone`` (the README's command), the files git tracks, in a folder named after the repository; for
ComfyUI Manager and comfy-cli, the registry archive as comfy-cli itself packs it (``comfy node pack``: git-tracked
files, ``.comfyignore`` honoured) unpacked into ``custom_nodes/<registry id>`` as ComfyUI-Manager's ``cnr_install``
does.  Nothing is pip-installed: ``requirements.txt`` lists only what ComfyUI itself already needs.  The official
``router.pt`` goes into ``models/vorta`` as it comes, once in the official folder layout with its ``config.json``
and once alone under another name; the README's converter command for that install runs as written.  The nodes load
(ComfyUI's "Import times" list shows the pack and no IMPORT FAILED), the Router Loader lists every file, and a prompt
generates with the official one.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
import torch

from test_router_files import official_state

from .server import HERE, ROOT, comfyui_server, get_json as _get, run_prompt
from .test_calibrate_server import loader_prompt

OFFICIAL_DIR = "wan-14B/train/ckpt/step-000100"  # the layout of the Hugging Face repository Wenhao-Sun/VORTA
README = (ROOT / "README.md").read_text()


def install_folders() -> dict:
    """The folder in ``custom_nodes`` each README install path gives the pack."""
    git_url = re.search(r"git clone (https://\S+?)`", README).group(1)
    registry_id = re.search(r"comfy node install (\S+?)`", README).group(1)
    assert registry_id == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"], registry_id
    return {"git clone": git_url.rstrip("/").split("/")[-1].removesuffix(".git"), "registry archive": registry_id}


def tracked_files() -> list:
    """What ``git clone`` of this checkout gets (the index, with the working tree's contents)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: {out.stderr.strip()}")
    return [f for f in out.stdout.split("\0") if f and (ROOT / f).is_file()]


def copy_files(files: list, dst: pathlib.Path) -> pathlib.Path:
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    return dst


def registry_archive(files: list, work: pathlib.Path) -> pathlib.Path:
    """``comfy node pack`` run on a repository holding the tracked files: the archive the registry would serve."""
    comfy_cli = shutil.which("comfy", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if comfy_cli is None:
        pytest.skip("comfy-cli is not installed (pip install comfy-cli; .ci/run installs it)")
    src = copy_files(files, work / "published")
    subprocess.run(["git", "init", "-q"], cwd=src, check=True)
    subprocess.run(["git", "add", "-A"], cwd=src, check=True)
    done = subprocess.run([comfy_cli, "--skip-prompt", "node", "pack"], cwd=src, capture_output=True, text=True,
                          env=dict(os.environ, HOME=str(work)), timeout=300)
    assert done.returncode == 0 and (src / "node.zip").is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    return src / "node.zip"


def convert_command(folder: str) -> list:
    """The README's converter command for a pack installed in ``custom_nodes/<folder>``, as a list of words."""
    lines = [line for line in README.splitlines() if line.startswith(f"python custom_nodes/{folder}/convert_router.py ")]
    assert len(lines) == 1, f"the README gives no converter command for custom_nodes/{folder}"
    return lines[0].split()


@pytest.mark.parametrize("how", ["git clone", "registry archive"])
def test_installed_pack_loads_and_uses_the_official_router_file(how, harness, comfy_paths, tmp_path):
    comfy, stubs = pathlib.Path(comfy_paths[0]), comfy_paths[1]
    for line in (ROOT / "requirements.txt").read_text().splitlines():  # already there with ComfyUI
        name = re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0]
        if name and not name.startswith("#"):
            assert importlib.util.find_spec(name.replace("-", "_")) is not None, f"{name} is not installed"

    base = tmp_path / "base"
    pack = base / "custom_nodes" / install_folders()[how]
    if how == "git clone":
        copy_files(tracked_files(), pack)
    else:
        with zipfile.ZipFile(registry_archive(tracked_files(), tmp_path)) as archive:
            names = archive.namelist()
            assert not [f for f in names if f.startswith(("tests/", "bench/", "tools/", ".ci/"))], names
            archive.extractall(pack)
    assert not pack.is_symlink() and (pack / "__init__.py").is_file() and (pack / "convert_router.py").is_file()
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
    # the README's converter command for this install, run as written from the ComfyUI folder, nothing on PYTHONPATH
    cmd = [w.replace("path/to/router.pt", f"models/vorta/{OFFICIAL_DIR}/router.pt") for w in convert_command(pack.name)]
    converted = pathlib.PurePath(cmd[-1]).name
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, *cmd[1:]], cwd=base, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (base / cmd[-1]).is_file(), done.stdout[-2000:] + done.stderr[-2000:]

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
        assert {f"{OFFICIAL_DIR}/router.pt", "vorta_wan2.1_t2v_14b_router.pt", converted} <= set(options), options

        run_prompt(url, loader_prompt(f"{OFFICIAL_DIR}/router.pt"), log_path)
        assert list((base / "output" / "latents").glob("loaded*.latent"))
        text = log_path.read_text()
        assert "VORTA (wan, mode=router" in text and "tile 1x2x2" in text, text[-4000:]
