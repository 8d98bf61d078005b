"""Apply VORTA: MODEL (+ ROUTER, + VORTA Settings) -> MODEL with routed sparse self-attention."""
from comfy_api.latest import io

from ..vorta.comfy.audit import enable_audit
from ..vorta.comfy.install import apply_vorta
from ..vorta.comfy.options import build_settings
from ..vorta.comfy.setting_specs import APPLY
from .options import spec_inputs
from .types import CATEGORY, GeometrySettings, Router


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
                             tooltip="Learned routers from VORTA Router Loader; with one connected, mode 'auto' routes "
                                     "with it."),
                GeometrySettings.Input("settings", optional=True,
                                       tooltip="Optional VORTA Settings: preset or custom tile/window/bucket/ratio, "
                                               "tau_sparse, switch_percent. Without it: preset auto."),
                *spec_inputs(APPLY),
            ],
            outputs=[io.Model.Output(tooltip="The model with VORTA attention; connect it to the sampler.")],
        )

    @classmethod
    def execute(cls, model, router=None, settings=None, audit_heads=0, **inputs) -> io.NodeOutput:
        patched = apply_vorta(model, build_settings(**inputs, **(settings or {})), router)
        if audit_heads:
            enable_audit(patched, audit_heads)
        return io.NodeOutput(patched)
