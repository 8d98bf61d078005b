"""VORTA Settings: the sparse geometry and routing thresholds, for Apply VORTA's optional ``settings`` input."""
from comfy_api.latest import io

from ..vorta.comfy.options import build_settings
from ..vorta.comfy.setting_specs import GEOMETRY
from .options import spec_inputs
from .types import CATEGORY, GeometrySettings


class VortaSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VortaSettings",
            display_name="VORTA Settings",
            category=CATEGORY,
            description="Sparse geometry (preset, or custom tile/window/bucket/ratio) and routing thresholds for Apply "
                        "VORTA. Leave it out for the defaults: the router's training settings, else the preset for "
                        "the detected model.",
            inputs=spec_inputs(GEOMETRY),
            outputs=[GeometrySettings.Output(display_name="settings", tooltip="Connect to Apply VORTA's settings input.")],
        )

    @classmethod
    def execute(cls, **inputs) -> io.NodeOutput:
        build_settings(**inputs)  # a wrong value is reported on this node, not later on Apply VORTA
        return io.NodeOutput(dict(inputs))
