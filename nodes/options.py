"""Node inputs made from the setting declarations (``vorta/comfy/setting_specs.py``)."""
from typing import Iterable, List

from comfy_api.latest import io

from ..vorta.comfy.setting_specs import SettingSpec


def spec_input(spec: SettingSpec):
    """One V3 input for one declared setting, with its default, range and tooltip."""
    if spec.kind == "combo":
        return io.Combo.Input(spec.name, options=list(spec.options), default=spec.default, tooltip=spec.tooltip)
    if spec.kind == "int":
        return io.Int.Input(spec.name, default=spec.default, min=int(spec.low), max=int(spec.high), step=int(spec.step),
                            control_after_generate=spec.control_after_generate or None, tooltip=spec.tooltip)
    if spec.kind == "float":
        return io.Float.Input(spec.name, default=spec.default, min=spec.low, max=spec.high, step=spec.step,
                              tooltip=spec.tooltip)
    if spec.kind == "bool":
        return io.Boolean.Input(spec.name, default=spec.default, tooltip=spec.tooltip)
    return io.String.Input(spec.name, default=spec.default, tooltip=spec.tooltip)


def spec_inputs(specs: Iterable[SettingSpec]) -> List:
    return [spec_input(s) for s in specs]
