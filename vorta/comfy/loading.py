"""Router files -> RouterBundle (no ComfyUI imports)."""
from __future__ import annotations

import os

from ..router_files import load_router_file
from .plan import RouterBundle


def load_bundle(path: str) -> RouterBundle:
    """Our .safetensors or the official router.pt (with its config.json when there) -> ROUTER."""
    routers, trained = load_router_file(path)
    return RouterBundle(routers, trained, os.path.basename(path))
