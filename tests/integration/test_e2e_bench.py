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


def _run_bench(tmp_path, *argv):
    env = {**os.environ, "COMFYUI_PATH": comfyui_path(), "PYTHONUNBUFFERED": "1"}
    if stub_dir():
        env["VORTA_COMFYUI_STUBS"] = stub_dir()
    return subprocess.run([sys.executable, str(ROOT / "bench" / "e2e.py"), "--tiny", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not comfyui_path(), reason="COMFYUI_PATH is not set: point it at a ComfyUI checkout")
def test_e2e_bench_stacks_tiny(tmp_path):
    """Weight dtypes through ComfyUI's loader, several VORTA backends, one summary table; an unavailable backend is
    reported by the node and the run goes on."""
    md = tmp_path / "e2e.md"
    r = _run_bench(tmp_path, "--model", "wan", "--configs", "dense,mix", "--repeats", "1", "--md", str(md),
                   "--stacks", "bf16:torch,bf16:triton,fp8_e4m3fn_fast:torch")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = md.read_text()
    assert "Command: `python bench/e2e.py --tiny --model wan" in text
    summary = text.split("### Stacks: tiny Wan")[1]
    assert re.search(r"^\| bf16: float32, disable_weight_init \| dense: .* \| dense \| [0-9.]+ s \| 1\.00x \| \*\*1\.00x\*\* \|",
                     summary, re.M), summary
    assert re.search(r"^\| bf16: .* \| VORTA `torch` \(torch\) \| mix 50/48/2 \| [0-9.]+ s \|", summary, re.M), summary
    assert re.search(r"^\| bf16: .* \| VORTA `triton` \| not run: rejected by Apply VORTA: .*triton", summary, re.M)
    # no fp8 compute on a CPU: ComfyUI runs fp8_e4m3fn_fast as fp8 weights with a manual cast, and the table says so
    assert re.search(r"^\| fp8_e4m3fn_fast: float8_e4m3fn, manual_cast \| dense: .* \| dense \|", summary, re.M)
    assert re.search(r"^\| fp8_e4m3fn_fast: float8_e4m3fn, manual_cast \| VORTA `torch` .* \| mix 50/48/2 \|", summary,
                     re.M)
    assert "ComfyUI found no fp8 compute on cpu" in text
    assert "stopped by" not in text


@pytest.mark.skipif(not comfyui_path(), reason="COMFYUI_PATH is not set: point it at a ComfyUI checkout")
def test_e2e_bench_rejects_unknown_backend_before_loading(tmp_path):
    r = _run_bench(tmp_path, "--model", "wan", "--backend", "no-such-backend")
    assert r.returncode == 2
    assert "Apply VORTA rejects backend 'no-such-backend': backend: 'no-such-backend' is not one of" in r.stderr
