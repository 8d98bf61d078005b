"""The pack as a person meets it: ComfyUI's server and its real graph editor in headless Chromium (Selenium).

With no model files, each workflow's missing-models panel offers every file for download (properties.models).  The
template browser lists each example workflow once, with its thumbnail; clicking each card loads the workflow
with every node known to the editor and every widget value as saved (nothing reset); a screenshot of a loaded
workflow is written to ``$VORTA_SCREENSHOT_DIR`` when set (the README's is ``docs/workflow.png``).
Skips with the reason where Chromium, chromedriver or Selenium is missing (``.ci/run`` installs them).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

import pytest

from .server import ROOT, base_folder, comfyui_server

WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
LOADERS = {"UNETLoader": [0], "CLIPLoader": [0], "DualCLIPLoader": [0, 1], "VAELoader": [0], "VortaRouterLoader": [0]}
MODEL_DIRS = {"UNETLoader": ["diffusion_models"], "CLIPLoader": ["text_encoders"],
              "DualCLIPLoader": ["text_encoders", "text_encoders"], "VAELoader": ["vae"], "VortaRouterLoader": ["vorta"]}


def _browser():
    """A headless Chromium driven by Selenium, or the reason there is none."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no Chromium/chromedriver installed (Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1920,1080"):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(browser, script: str, timeout: float = 60, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.3)
    text = browser.execute_script("return document.body.innerText.slice(0, 1500)")
    raise AssertionError(f"timed out waiting for {what or script}; the page shows:\n{text}")


def _placeholder_models(base: pathlib.Path) -> None:
    """Empty files under the names the workflows use, so the editor lists them and shows no missing-models dialog."""
    for path in WORKFLOWS:
        for n in json.loads(path.read_text())["nodes"]:
            for index, folder in zip(LOADERS.get(n["type"], []), MODEL_DIRS.get(n["type"], [])):
                (base / "models" / folder).mkdir(parents=True, exist_ok=True)
                (base / "models" / folder / n["widgets_values"][index]).touch()


GRAPH_STATE = """
const saved = arguments[0];
const out = [];
for (const n of saved.nodes) {
  const live = app.graph.getNodeById(n.id);
  if (!live) { out.push({id: n.id, type: n.type, problem: 'not loaded'}); continue; }
  out.push({id: n.id, type: live.type, known: !!LiteGraph.registered_node_types[live.type],
            values: (live.widgets || []).filter(w => w.serialize !== false).map(w => w.value)});
}
return out;
"""


def _model_files(saved: dict) -> list:
    return [(n["widgets_values"][i], d) for n in saved["nodes"]
            for i, d in zip(LOADERS.get(n["type"], []), MODEL_DIRS.get(n["type"], []))]


def _check_missing_models_offer_downloads(browser) -> None:
    """With no model files, each workflow's errors panel lists every file it needs with a Download button (what
    the loaders' properties.models make possible), our router included."""
    for path in WORKFLOWS:
        saved = json.loads(path.read_text())
        browser.execute_script("app.loadGraphData(arguments[0])", saved)
        text = _wait(browser, """
            const open = [...document.querySelectorAll('*')].filter(
                e => e.children.length === 0 && e.textContent.trim() === 'View details');
            open.forEach(e => e.click());
            const t = document.body.innerText;
            return t.includes('Missing Models') ? t : null;""", what=f"the missing-models panel of {path.stem}")
        downloads = browser.execute_script("""return [...document.querySelectorAll('*')].filter(
            e => e.children.length === 0 && e.textContent.trim() === 'Download').length""")
        files = set(_model_files(saved))
        for name, folder in files:
            assert name in text, (path.stem, name)
        assert downloads == len(files), (path.stem, downloads, sorted(files))


def test_template_browser_and_workflows_in_the_graph_editor(comfy_paths, tmp_path):
    browser = _browser()
    comfy, stubs = pathlib.Path(comfy_paths[0]), comfy_paths[1]
    base = base_folder(tmp_path)
    shots = os.environ.get("VORTA_SCREENSHOT_DIR")
    try:
        with comfyui_server(comfy, base, stubs, tmp_path / "server.log") as url:
            browser.get(url + "/")
            _wait(browser, "return !!(window.app && window.app.graph && window.LiteGraph)", what="the editor")
            _check_missing_models_offer_downloads(browser)
            _placeholder_models(base)  # from here on every file is there: no dialogs, the combos list them
            browser.get(url + "/")
            _wait(browser, "return !!(window.app && window.app.graph && window.LiteGraph)", what="the editor")
            for path in WORKFLOWS:
                time.sleep(1.0)  # a first visit opens the template browser by itself; the command would close it
                browser.execute_script("""
                    if (![...document.querySelectorAll('img')].some(i => i.alt && i.alt.startsWith('VORTA')))
                        app.extensionManager.command.execute('Comfy.BrowseTemplates');""")
                _wait(browser, """  // the pack's own category under Extensions, named after its folder
                    const item = [...document.querySelectorAll('*')].find(
                        e => e.children.length === 0 && e.textContent.trim() === 'ComfyUI-VORTA');
                    if (item) item.click();
                    return !!item;""", what="the ComfyUI-VORTA template category")
                cards = _wait(browser, """
                    const imgs = [...document.querySelectorAll('img')].filter(i => i.alt && i.alt.startsWith('VORTA'));
                    return imgs.length >= N && imgs.every(i => i.complete && i.naturalWidth > 0)
                        ? imgs.map(i => [i.alt, i.naturalWidth]) : null;""".replace("N", str(len(WORKFLOWS))),
                              what="template cards with thumbnails")
                names = sorted(alt for alt, _ in cards)
                assert names == sorted(p.stem for p in WORKFLOWS), names  # each workflow listed once
                assert all(width == 512 for _, width in cards)  # our thumbnails, decoded
                browser.execute_script("""
                    const img = [...document.querySelectorAll('img')].find(i => i.alt === arguments[0]);
                    img.click();""", path.stem)
                saved = json.loads(path.read_text())
                _wait(browser, "return app.graph && app.graph._nodes.length === arguments[0]"
                      .replace("arguments[0]", str(len(saved["nodes"]))), what=f"{path.stem} loaded")
                time.sleep(1.0)  # widgets settle (combo lists, linked inputs)
                state = browser.execute_script(GRAPH_STATE, saved)
                by_id = {n["id"]: n for n in saved["nodes"]}
                for node in state:
                    assert node.get("known"), (path.stem, node)  # no missing node
                    expected = by_id[node["id"]]["widgets_values"]
                    assert node["values"] == expected, (path.stem, node["type"], node["values"], expected)
                if shots and path.stem == "VORTA Wan2.1 14B router":
                    browser.execute_script("""
                        try { await app.extensionManager.setting.set('Comfy.Minimap.Visible', false); } catch (e) {}
                        app.canvas.ds.scale = 0.7;
                        app.canvas.ds.offset = [580, 150];  // the whole graph, legible (screen = (pos + offset) * scale)
                        app.canvas.setDirty(true, true);""".replace("await ", ""))
                    time.sleep(0.5)
                    browser.save_screenshot(str(pathlib.Path(shots) / "workflow.png"))
    finally:
        browser.quit()
