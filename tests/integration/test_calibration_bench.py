"""The calibration-cost benchmark's CPU smoke run (``--tiny``): real ComfyUI, tiny Wan and Wan2.2-5B, the same code
path as on the GPU (dense steps, calibrated steps, the router fit), one markdown table."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT, comfyui_path, stub_dir


@pytest.mark.skipif(not comfyui_path(), reason="COMFYUI_PATH is not set: point it at a ComfyUI checkout")
def test_calibration_bench_tiny(tmp_path):
    md = tmp_path / "calibrate.md"
    env = {**os.environ, "COMFYUI_PATH": comfyui_path(), "PYTHONUNBUFFERED": "1"}
    if stub_dir():
        env["VORTA_COMFYUI_STUBS"] = stub_dir()
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "calibration_cost.py"), "--tiny", "--steps", "1",
                        "--md", str(md)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = md.read_text()
    assert "stopped" not in text, text
    rows = [line for line in text.splitlines() if line.startswith("| tiny")]
    assert [row.split(" | ")[0] for row in rows] == ["| tiny Wan", "| tiny Wan2.2-5B"], text
    assert "reproduces 100.00% of the calibrated decisions" in r.stdout
