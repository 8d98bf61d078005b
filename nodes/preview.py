"""VORTA Routing Preview: the whole (step x layer x head) routing table for a SIGMAS schedule, before sampling."""
from comfy_api.latest import io

from ..vorta.comfy.preview import preview_outputs, preview_table
from .types import CATEGORY, Router


class VortaRoutingPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VortaRoutingPreview",
            display_name="VORTA Routing Preview",
            category=CATEGORY,
            description="Routing depends only on the timestep, so the branch of every head at every step is known before "
                        "sampling. Shows it as a heat map (rows = steps, columns = layers x heads) with a summary.",
            inputs=[
                io.Model.Input("model", tooltip="The model from Apply VORTA (its settings are used), or a plain model plus a ROUTER."),
                io.Sigmas.Input("sigmas", tooltip="The sampling schedule, e.g. from BasicScheduler."),
                Router.Input("router", optional=True, tooltip="Routers to preview when the model is not patched by Apply VORTA."),
                io.Latent.Input("latent", optional=True,
                                tooltip="The latent to be sampled; sets the grid for the FLOPs estimate (default: the preset's grid)."),
            ],
            outputs=[
                io.Image.Output(display_name="heat map", tooltip="Grey = full, blue = coreset, orange = sliding tile."),
                io.String.Output(display_name="summary", tooltip="Share of heads per branch and attention FLOPs relative to dense."),
            ],
        )

    @classmethod
    def execute(cls, model, sigmas, router=None, latent=None) -> io.NodeOutput:
        table, holder = preview_table(model, sigmas, bundle=router)
        image, text = preview_outputs(table, holder, latent["samples"] if latent is not None else None)
        return io.NodeOutput(image, text)
