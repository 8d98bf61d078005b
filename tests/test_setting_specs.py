"""One declaration per setting: the nodes, build_settings, Settings, the workflows and the README derive from it."""
import dataclasses
import inspect
import pathlib

import pytest

from comfyui_vorta.vorta.comfy import options, setting_specs as specs
from comfyui_vorta.vorta.comfy.settings import Settings
from comfyui_vorta.vorta.config import VortaConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_apply_has_the_few_inputs_people_change_and_settings_the_geometry():
    assert [s.name for s in specs.APPLY] == ["mode", "start_percent", "end_percent", "dense_blocks", "backend",
                                          "audit_heads"]
    assert {s.name for s in specs.GEOMETRY} >= {"preset", "tile_t", "window_h", "bucket_w", "ratio", "tau_sparse",
                                                "switch_percent"}
    assert not {s.name for s in specs.APPLY} & {s.name for s in specs.GEOMETRY}
    for s in specs.APPLY + specs.GEOMETRY + specs.CALIBRATE:
        assert s.tooltip and s.tooltip.endswith((".", ")")), s.name
        s.check(s.default)  # every default is inside its own range


def test_calibration_geometry_is_the_settings_geometry():
    """VORTA Calibrate Router declares only its own inputs; its tile/window/bucket/ratio are VORTA Settings' own
    declarations (its preset differs in the tooltip only), and both nodes turn them into the same VortaConfig."""
    calibrate = {s.name: s for s in specs.CALIBRATE}
    for s in specs.GEOMETRY:
        if s.name in ("tau_sparse", "switch_percent"):
            assert s.name not in calibrate
        elif s.name == "preset":
            assert dataclasses.replace(calibrate["preset"], tooltip=s.tooltip) == s
        else:
            assert calibrate[s.name] is s
    custom = {**specs.DEFAULTS, "preset": "custom", "tile_t": 2, "bucket_w": 1, "ratio": 0.25}
    assert options.geometry_config(custom) == options.build_settings(**custom).config == VortaConfig(
        tile=(2, 9, 8), bucket=(2, 3, 1), ratio=0.25)
    assert options.geometry_config({"preset": "auto"}) is None
    with pytest.raises(ValueError, match="noise_seed"):
        calibrate["noise_seed"].check(-1)
    with pytest.raises(ValueError, match="add_noise"):
        calibrate["add_noise"].check(1)


def test_defaults_are_not_spelled_anywhere_else():
    """Settings takes its defaults from the table, build_settings takes no default values of its own, the geometry
    defaults are VortaConfig's, and tau_sparse lives on Settings only (not in the geometry)."""
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    for name in ("mode", "preset", "tau_sparse", "start_percent", "end_percent", "switch_percent", "backend"):
        assert fields[name] == specs.DEFAULTS[name], name
    assert all(p.kind == p.VAR_KEYWORD for p in inspect.signature(options.build_settings).parameters.values())
    assert "tau_sparse" not in {f.name for f in dataclasses.fields(VortaConfig)}
    default = VortaConfig()
    assert (specs.DEFAULTS["tile_t"], specs.DEFAULTS["tile_h"], specs.DEFAULTS["tile_w"]) == default.tile
    assert specs.DEFAULTS["ratio"] == default.ratio


@pytest.mark.parametrize("spec", specs.APPLY + specs.GEOMETRY, ids=lambda s: s.name)
def test_build_settings_refuses_values_outside_the_declared_range(spec):
    if spec.kind in ("int", "float"):
        with pytest.raises(ValueError, match=spec.name):
            options.build_settings(**{spec.name: spec.high + 1})
    elif spec.kind == "combo":
        with pytest.raises(ValueError, match=spec.name):
            options.build_settings(**{spec.name: "no-such-choice"})


def test_readme_settings_table_is_the_declarations():
    import importlib.util

    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "tools" / "settings_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = (ROOT / "README.md").read_text()
    assert tool.readme_with_table(text) == text, "run: python tools/settings_table.py --write"
    for s in specs.APPLY + specs.GEOMETRY + specs.CALIBRATE:
        assert f"| `{s.name}` |" in text, s.name
