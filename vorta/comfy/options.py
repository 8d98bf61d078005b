"""Node input values -> Settings (pure; used by the nodes, the tools and the tests)."""
from __future__ import annotations

from typing import Mapping, Optional

from ..config import PRESETS, VortaConfig
from .setting_specs import DEFAULTS, SPECS
from .settings import Settings, parse_dense_blocks


def geometry_config(values: Mapping[str, object]) -> Optional[VortaConfig]:
    """The sparse geometry the ``preset`` input names (VORTA Settings, VORTA Calibrate Router): the custom
    tile/window/bucket/ratio inputs for 'custom', None for 'auto' (decided later, from the router or the model)."""
    preset = values["preset"]
    if preset == "custom":
        v = values
        return VortaConfig(tile=(v["tile_t"], v["tile_h"], v["tile_w"]),
                           window=(v["window_t"], v["window_h"], v["window_w"]),
                           bucket=(v["bucket_t"], v["bucket_h"], v["bucket_w"]), ratio=float(v["ratio"]))
    return None if preset == "auto" else PRESETS[preset].config


def build_settings(**values: object) -> Settings:
    """Settings from Apply VORTA's and VORTA Settings' input values by name; a missing one takes its default.
    Raises ValueError naming the setting for an unknown name or a value outside its range."""
    unknown = sorted(set(values) - set(SPECS))
    if unknown:
        raise ValueError(f"unknown VORTA setting {', '.join(unknown)}; expected some of {', '.join(SPECS)}")
    v = {**DEFAULTS, **values}
    for name, value in v.items():
        SPECS[name].check(value)
    return Settings(mode=v["mode"], preset=v["preset"], config=geometry_config(v), tau_sparse=float(v["tau_sparse"]),
                    start_percent=float(v["start_percent"]), end_percent=float(v["end_percent"]),
                    switch_percent=float(v["switch_percent"]), dense_blocks=parse_dense_blocks(v["dense_blocks"]),
                    backend=v["backend"])
