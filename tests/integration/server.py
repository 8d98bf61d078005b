"""Run ComfyUI's own server (``main.py --cpu``) on a loopback port for a test, with the pack mounted the way users
install it (a folder in ``custom_nodes``)."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator, Optional

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post_json(url: str, data) -> dict:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def run_prompt(url: str, prompt: dict, log_path: pathlib.Path, timeout: float = 240) -> dict:
    """Queue an API-format prompt, wait until ComfyUI reports it finished, and return its history entry; fails
    with the server log when it did not finish or did not succeed."""
    pid = post_json(f"{url}/prompt", {"prompt": prompt, "client_id": "vorta-test"})["prompt_id"]
    deadline, entry = time.time() + timeout, None
    while time.time() < deadline:
        hist = get_json(f"{url}/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            entry = hist[pid]
            if entry["status"]["completed"] or entry["status"].get("status_str") == "error":
                break
        time.sleep(0.2)
    text = log_path.read_text()
    assert entry is not None, f"prompt did not finish:\n{text[-4000:]}"
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{text[-4000:]}"
    return entry


def base_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """A ComfyUI base directory with the pack and the test fixture nodes in custom_nodes/."""
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "models" / "vorta").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / "ComfyUI-VORTA")
    os.symlink(HERE / "fixture_nodes" / "vorta_test_fixtures", base / "custom_nodes" / "vorta_test_fixtures")
    return base


@contextlib.contextmanager
def comfyui_server(comfy: pathlib.Path, base: pathlib.Path, stubs: Optional[str], log_path: pathlib.Path,
                   ready_path: str = "/object_info/VortaApply") -> Iterator[str]:
    """Start the server, wait until ``ready_path`` answers, yield its URL, stop it."""
    env = dict(os.environ)
    if stubs and (pathlib.Path(stubs) / "torchvision").is_dir():
        env["PYTHONPATH"] = stubs + os.pathsep + env.get("PYTHONPATH", "")
    port = free_port()
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
           str(base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfy, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                get_json(url + ready_path, timeout=2)
                break
            except Exception:
                time.sleep(0.3)
        else:
            raise AssertionError(f"server did not come up:\n{log_path.read_text()[-4000:]}")
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{log_path.read_text()[-4000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
