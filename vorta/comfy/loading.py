"""Router files -> RouterBundle (no ComfyUI imports)."""
from __future__ import annotations

import os

from ..convert import _find_config
from ..router_files import is_safetensors, load_router_file, read_training_config
from .plan import RouterBundle


def load_bundle(path: str) -> RouterBundle:
    """Load our .safetensors or the official router.pt; for the official file the training settings come from
    the ``config.json`` of the official folder layout when it is there, else the official defaults."""
    routers, trained = load_router_file(path)
    if not is_safetensors(path):
        cfg = _find_config(path)
        if cfg:
            trained = read_training_config(cfg)
    return RouterBundle(routers, trained, os.path.basename(path))
