"""The pack installs and imports the way ComfyUI and our tools need."""
import importlib.util
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_requirements_never_list_torch_or_triton():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
        assert name not in {"torch", "triton", "torchvision", "torchaudio"}, line
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.lower().startswith(("torch", "triton")) for d in deps)


def test_pyproject_registry_metadata():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["name"] == "comfyui-vorta"  # `vorta` on PyPI is another project
    assert "comfy node install comfyui-vorta" in (ROOT / "README.md").read_text()
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"].startswith(">=0.3.")
    assert int(comfy["requires-comfyui"].split(".")[-1]) >= 59  # optimized_attention_override
    assert "test" in data["project"]["optional-dependencies"] and data["project"]["urls"]["Repository"]


def test_loads_under_an_arbitrary_folder_name_like_comfyui(tmp_path):
    """ComfyUI imports the folder as a package named after the folder; nothing heavy and no comfy.* at import,
    and our nodes/ never becomes the top-level module `nodes`."""
    name = "ComfyUI-VORTA-any-name"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert hasattr(module, "comfy_entrypoint")
        engine = importlib.import_module(f"{name}.vorta.routing")  # relative imports resolve inside the pack
        assert engine.routed_attention
        comfy = sys.modules.get("comfy")
        assert comfy is None or not str(getattr(comfy, "__file__", "")).startswith(str(ROOT))  # never ours
        top_nodes = sys.modules.get("nodes")
        assert top_nodes is None or not str(getattr(top_nodes, "__file__", "")).startswith(str(ROOT))
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_benchmarks_and_tools_are_outside_the_installed_package():
    """bench/ and tools/ are development folders: not installed, and left out of the registry archive."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = data["tool"]["setuptools"]["packages"]
    assert not [p for p in packages if "bench" in p or "tools" in p], packages
    ignored = (ROOT / ".comfyignore").read_text().split()
    assert {"bench/", "tools/", "tests/"} <= set(ignored)
    assert (ROOT / "bench" / "e2e.py").is_file() and not (ROOT / "vorta" / "bench").exists()
