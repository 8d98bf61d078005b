"""VORTA Router Loader: a router file from models/vorta -> ROUTER."""
from comfy_api.latest import io

from ..vorta.comfy.folders import router_files, router_path
from ..vorta.comfy.loading import load_bundle
from .types import CATEGORY, Router


class VortaRouterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VortaRouterLoader",
            display_name="VORTA Router Loader",
            category=CATEGORY,
            description="Loads learned VORTA routers (our .safetensors or the official router.pt) from models/vorta.",
            inputs=[
                io.Combo.Input("router_name", options=router_files(),
                               tooltip="Router file in ComfyUI/models/vorta (or a 'vorta:' path in extra_model_paths.yaml). "
                                       "The official Hugging Face folders (wan-14B/..., hunyuan/...) can be copied as they are."),
            ],
            outputs=[Router.Output(display_name="ROUTER",
                                   tooltip="Per-layer routers plus the tile/window/bucket settings they were trained with; "
                                           "Apply VORTA checks that they fit the model.")],
        )

    @classmethod
    def execute(cls, router_name: str) -> io.NodeOutput:
        bundle = load_bundle(router_path(router_name))
        return io.NodeOutput(bundle)
