"""The ``vorta`` model folder (``models/vorta``) for router files, registered with ComfyUI's folder_paths."""
from __future__ import annotations

import os

from ..router_files import ROUTER_EXTENSIONS

FOLDER = "vorta"
EXTENSIONS = set(ROUTER_EXTENSIONS)  # what the loader accepts; ComfyUI compares lower-cased extensions


def register_router_folder() -> None:
    """Add ``models/vorta`` (the default location) while keeping paths from ``extra_model_paths.yaml``, which
    ComfyUI loads before custom nodes, and restrict the listing to router file extensions."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    paths = list(paths)
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))


def router_files() -> list:
    import folder_paths

    register_router_folder()
    return folder_paths.get_filename_list(FOLDER)


def router_path(name: str) -> str:
    import folder_paths

    register_router_folder()
    return folder_paths.get_full_path_or_raise(FOLDER, name)


def router_folder() -> str:
    """Where new router files go: ``models/vorta`` (the first ``vorta`` folder, see ``register_router_folder``)."""
    import folder_paths

    register_router_folder()
    return folder_paths.get_folder_paths(FOLDER)[0]
