"""Convert an official VORTA router.pt to .safetensors, from any install (Manager, comfy-cli, git, pip):

    python custom_nodes/<pack folder>/convert_router.py path/to/router.pt models/vorta/wan2.1-t2v-14b.safetensors

(<pack folder>: ``comfyui-vorta`` from ComfyUI Manager or comfy-cli, ``ComfyUI-VORTA`` from git clone.)

Optional: VORTA Router Loader reads the official router.pt as it is.  The pack's folder is loaded as a package
under a private name, as ComfyUI loads it, so nothing has to be installed or on PYTHONPATH.
"""
import importlib
import importlib.util
import pathlib
import sys

PACKAGE = "_comfyui_vorta_convert"


def _load_pack():
    here = pathlib.Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location(PACKAGE, here / "__init__.py", submodule_search_locations=[str(here)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{PACKAGE}.vorta.convert")


if __name__ == "__main__":
    sys.exit(_load_pack().main())
