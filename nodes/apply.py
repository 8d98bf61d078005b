"""Apply VORTA: MODEL (+ ROUTER) -> MODEL with routed sparse self-attention."""
from comfy_api.latest import io

from ..vorta.comfy.audit import enable_audit
from ..vorta.comfy.install import apply_vorta
from .options import settings_from_inputs, settings_inputs
from .types import CATEGORY, Router


class VortaApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VortaApply",
            display_name="Apply VORTA (routed sparse attention)",
            category=CATEGORY,
            description="Routes every self-attention head, per step, to sliding-tile, coreset or full attention. "
                        "Wan 2.x and HunyuanVideo. Full heads, cross-attention and anything that is not a video grid "
                        "run on the attention backend already selected (e.g. SageAttention). The input model is not changed.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.x or HunyuanVideo model (from Load Diffusion Model, LoRA, etc.)."),
                Router.Input("router", optional=True,
                             tooltip="Learned routers from VORTA Router Loader; needed for mode 'router'."),
                *settings_inputs(),
                io.Int.Input("audit_heads", default=0, min=0, max=256, optional=True,
                             tooltip="Quality check: per step, this many (layer, head) pairs also compute full attention "
                                     "on 1/8 of the queries, and the run summary (console) reports the measured error "
                                     "of the branch each one took. 0 = off."),
            ],
            outputs=[io.Model.Output(tooltip="The model with VORTA attention; connect it to the sampler.")],
        )

    @classmethod
    def execute(cls, model, router=None, audit_heads=0, **inputs) -> io.NodeOutput:
        settings = settings_from_inputs(**inputs)
        patched = apply_vorta(model, settings, router)
        if audit_heads:
            enable_audit(patched, audit_heads)
        return io.NodeOutput(patched)
