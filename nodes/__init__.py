"""ComfyUI nodes (V3 schema).  Imported only by ComfyUI, through ``comfy_entrypoint``."""
from comfy_api.latest import ComfyExtension


class VortaExtension(ComfyExtension):
    async def get_node_list(self):
        return []
