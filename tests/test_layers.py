"""The shipped package's layers, read from its source (imports inside functions included):

engine (``vorta/*.py``)  <-  kernels (``vorta/kernels``)  <-  ComfyUI adapter (``vorta/comfy``)  <-  nodes (``nodes/``)

Each layer imports only the layers to its left, the module graph has no cycle, only ``vorta/comfy`` and ``nodes/``
import ComfyUI, and nothing shipped imports the development folders (bench/, tools/, tests/).  Every module also
imports on its own, first, in a fresh package state (a cycle hidden behind an import order would fail there).
"""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ["__init__.py", "convert_router.py", "nodes", "vorta"]
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "comfyui_version", "server", "execution"}
DEV_FOLDERS = {"bench", "tools", "tests"}


def _modules():
    """module name (relative to the pack, '' for its __init__) -> source path"""
    out = {}
    for entry in SHIPPED:
        p = ROOT / entry
        for f in ([p] if p.is_file() else sorted(p.rglob("*.py"))):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path):
    """(internal module names, external top-level names) imported anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            external.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                external.add(node.module.split(".")[0])
                continue
            base = package.split(".") if package else []
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{a.name}" if target else a.name
                internal.add(sub if sub in MODULES else target)
    return internal, external


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    if module.startswith("nodes") or module == "":
        return 3
    if module.startswith("vorta.comfy"):
        return 2
    if module.startswith("vorta.kernels"):
        return 1
    return 0


def test_each_layer_imports_only_the_layers_below_it():
    bad = [f"{m} -> {t}" for m, (internal, _) in GRAPH.items() for t in internal
           if t in MODULES and _layer(t) > _layer(m)]
    assert not bad, bad


def test_module_graph_has_no_cycle():
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v][0]:
            if w not in MODULES or w == v and v == "":
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in MODULES:
        if v not in index:
            visit(v)
    # a package's __init__ importing its own submodule lazily is not a cycle unless the submodule imports it back
    assert not cycles, cycles


def test_only_the_comfy_adapter_and_the_nodes_import_comfyui():
    bad = [f"{m} imports {sorted(ext & COMFYUI_MODULES)}" for m, (_, ext) in GRAPH.items()
           if ext & COMFYUI_MODULES and _layer(m) < 2]
    assert not bad, bad
    assert not [m for m, (_, ext) in GRAPH.items() if ext & DEV_FOLDERS], "shipped code imports bench/tools/tests"
    assert not (ROOT / "vorta" / "bench").exists()


def test_every_engine_kernel_and_adapter_module_imports_first_in_a_fresh_package_state():
    """One interpreter: before each import every comfyui_vorta module is dropped from sys.modules, so each module is
    the first of the pack to load (as a fresh interpreter would load it).  nodes/ needs ComfyUI and is left to the
    integration tests."""
    names = [m for m in MODULES if _layer(m) < 3]
    code = (
        "import importlib, sys\n"
        f"names = {names!r}\n"
        "failed = []\n"
        "for n in names:\n"
        "    for k in [k for k in sys.modules if k == 'comfyui_vorta' or k.startswith('comfyui_vorta.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module('comfyui_vorta.' + n)\n"
        "    except Exception as e:\n"
        "        failed.append(f'{n}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


def test_importing_the_adapter_loads_neither_dynamo_nor_triton():
    """What ComfyUI's start-up imports of the pack (everything the nodes import) stays light: torch._dynamo (seconds)
    and triton load only when a model is patched or a kernel runs.  The timing against real ComfyUI is in
    tests/integration/test_startup.py."""
    code = ("import sys, torch\n"
            "before = set(sys.modules)\n"
            "import comfyui_vorta\n"
            "from comfyui_vorta.vorta.comfy import folders, install, loading, options, preview, setting_specs\n"
            "new = set(sys.modules) - before\n"
            "heavy = sorted(m for m in new if m.startswith(('torch._dynamo', 'triton', 'torch._inductor')))\n"
            "print(heavy[:5])\n"
            "sys.exit(1 if heavy else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
