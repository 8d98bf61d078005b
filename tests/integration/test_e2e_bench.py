"""The end-to-end benchmark's CPU smoke run (``--tiny``): real ComfyUI, tiny Wan and HunyuanVideo, every configuration."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT, comfyui_path, stub_dir


@pytest.mark.skipif(not comfyui_path(), reason="COMFYUI_PATH is not set: point it at a ComfyUI checkout")
def test_e2e_bench_tiny(tmp_path):
    md = tmp_path / "e2e.md"
    env = {**os.environ, "COMFYUI_PATH": comfyui_path(), "PYTHONUNBUFFERED": "1"}
    if stub_dir():
        env["VORTA_COMFYUI_STUBS"] = stub_dir()
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "e2e.py"), "--tiny", "--model", "wan,wan5b,hunyuan",
                        "--repeats", "1", "--md", str(md)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = md.read_text()
    assert "stopped by" not in text and "skipped" not in text, text
    for title in ("tiny Wan", "tiny HunyuanVideo"):
        section = text.split(f"### {title} ")[1].split("###")[0]
        for row in ("dense", "mix 50/48/2", "vorta sliding", "vorta coreset", "vorta full", "schedule (50 steps)"):
            assert re.search(rf"^\| {re.escape(row)} \|", section, re.M), (title, row, section)
        assert "| self-attention: sliding tile |" in section and "| rest of the model" in section
        assert "dense fallbacks" not in section  # every routed call ran the sparse branches
    assert "no dense fallbacks" in r.stdout  # VORTA's own end-of-run summary
