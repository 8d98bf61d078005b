"""ComfyUI-VORTA: routed sparse attention (VORTA) for Wan 2.x and HunyuanVideo in ComfyUI.

ComfyUI imports this folder as a package under whatever name it has on disk; nothing heavy is imported
here.  The nodes are registered through the V3 entry point ``comfy_entrypoint``, which also registers the
``models/vorta`` router folder with folder_paths (keeping any ``vorta:`` paths from extra_model_paths.yaml).
"""

__all__ = ["comfy_entrypoint"]


async def comfy_entrypoint():
    """V3 extension entry point (called by ComfyUI after import)."""
    from .vorta.comfy.folders import register_router_folder

    register_router_folder()
    from .nodes import VortaExtension

    return VortaExtension()
