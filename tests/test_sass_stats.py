"""bench/sass_stats.py reads the sliding kernel as compiled for sm_90 without a GPU: the compile for a told target and
the disassembly must keep working (it is how kernel changes are looked at before device time is spent)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_inner_loop_of_the_192_token_tile_config_is_found():
    triton = pytest.importorskip("triton")
    if not (pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").is_file():
        pytest.skip("this Triton wheel ships no cuobjdump")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled, not interpreted
    cmd = [sys.executable, str(ROOT / "bench" / "sass_stats.py"), "--tile", "4,6,8", "--config", "64,64,4,3"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REG:" in done.stdout
    # the whole-block loop: 8 Q.K^T (K = 128 in steps of 16) and 4 P.V (K = 64) wgmma instructions and at least one
    # exp2 per score of the 64x64 block per thread (32)
    loops = [ln for ln in done.stdout.splitlines() if "loop of" in ln]
    assert any("HGMMA 12," in ln and int(ln.split("MUFU ")[1].split(",")[0]) >= 32 for ln in loops), done.stdout
