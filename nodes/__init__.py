"""ComfyUI nodes (V3 schema).  Imported only by ComfyUI, through ``comfy_entrypoint``; no logic beyond wiring."""
from comfy_api.latest import ComfyExtension

from .apply import VortaApply
from .calibrate import VortaCalibrateRouter
from .preview import VortaRoutingPreview
from .router_loader import VortaRouterLoader
from .settings import VortaSettings

NODES = [VortaRouterLoader, VortaSettings, VortaApply, VortaRoutingPreview, VortaCalibrateRouter]


class VortaExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
