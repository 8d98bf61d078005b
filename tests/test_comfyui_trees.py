"""The integration tests (``tests/integration``) against every real ComfyUI tree beside the project.

ComfyUI can be imported once per process (its top-level ``comfy``/``nodes`` modules), so each tree runs the
integration suite in its own pytest process with ``COMFYUI_PATH`` pointing at it.  The trees live in
``../shared/comfyui`` (or ``VORTA_COMFYUI_TREES``): 0.3.64, 0.33.0, and 0.33.0 with the 0.38 attention files laid
over a copy.  A missing tree skips with the reason, except where ``VORTA_REQUIRE_COMFYUI=1`` (CI), where it fails;
an integration test that skips inside a tree run fails this test too, so CI can never pass with tests left out.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TREES = pathlib.Path(os.environ.get("VORTA_COMFYUI_TREES", ROOT.parent / "shared" / "comfyui"))
REQUIRED = os.environ.get("VORTA_REQUIRE_COMFYUI") == "1"
# name -> (base tree, overlay laid over a copy of it or None)
TREE_SPECS = {"0.3.64": ("0.3.64", None), "0.33.0": ("0.33.0", None),
              "0.38-attention": ("0.33.0", "overlay-0.38-attention")}


def _missing(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (VORTA_REQUIRE_COMFYUI=1: every ComfyUI tree must be tested)")
    pytest.skip(reason)


def _tree(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    base, overlay = TREE_SPECS[name]
    src = TREES / base
    if not (src / "comfy" / "sd.py").is_file():
        _missing(f"no ComfyUI tree at {src} (see ../shared/comfyui/README.md)")
    if overlay is None:
        return src
    if not (TREES / overlay).is_dir():
        _missing(f"no overlay at {TREES / overlay}")
    dst = tmp_path / f"comfyui-{name}"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(TREES / overlay, dst, dirs_exist_ok=True)
    return dst


@pytest.mark.parametrize("name", list(TREE_SPECS))
def test_integration_suite_on_comfyui_tree(name, tmp_path):
    tree = _tree(name, tmp_path)
    env = dict(os.environ, COMFYUI_PATH=str(tree), PYTHONUNBUFFERED="1")
    stubs = TREES / "stubs"
    if stubs.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(stubs), env.get("PYTHONPATH")) if p)
    report = tmp_path / "report.xml"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "integration"), "-q", "-p", "no:cacheprovider",
           f"--junitxml={report}", "-o", "junit_family=xunit2", f"--basetemp={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    out = proc.stdout[-12000:] + proc.stderr[-4000:]
    assert report.is_file(), f"the integration run on ComfyUI {name} wrote no report:\n{out}"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    print(f"ComfyUI {name}: {n}")
    assert proc.returncode == 0 and not n["failures"] and not n["errors"], f"ComfyUI {name}: {n}\n{out}"
    skipped = [f"{c.get('name')}: {s.get('message')}" for c in suite.iter("testcase") for s in c.findall("skipped")]
    assert not skipped, f"ComfyUI {name}: integration tests skipped:\n" + "\n".join(skipped)
    assert n["tests"] > 0
