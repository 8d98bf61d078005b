"""Training settings (tile, window, bucket, ratio) as stored in router files, checked field by field.

They come from files a user may have edited or mixed up (the official ``config.json``, our ``.safetensors``
metadata), so every field is checked for its type and range here and a wrong one is reported by name,
instead of failing later inside the geometry with a bare ValueError.  Errors carry no file name; the
loaders in ``router_files`` add it together with what to do.
"""
from __future__ import annotations

from typing import Dict, Mapping

from .config import VortaConfig
from .geometry import Triple

# official config.json (self_attention_kwargs) -> our metadata key, per VortaConfig field
OFFICIAL_KEYS = {"tile": "tile_size", "window": "window_size", "bucket": "lowres_window_size",
                 "ratio": "lowres_reduction_rate"}
METADATA_KEYS = {"tile": "tile_size", "window": "window_size", "bucket": "bucket_size", "ratio": "coreset_ratio"}


class SettingsError(ValueError):
    """A settings field that is missing or has the wrong type or range; the message names the field."""


def _triple(value: object, name: str) -> Triple:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise SettingsError(f"{name} must be three positive integers (frames, height, width), got {value!r}")
    return (value[0], value[1], value[2])


def _ratio(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise SettingsError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def settings_from_config_json(cfg: object) -> VortaConfig:
    """The settings from a parsed official ``config.json`` (its ``self_attention_kwargs``; a dict holding the
    fields at the top level is accepted too, for ``convert --config`` files written by hand)."""
    if not isinstance(cfg, dict):
        raise SettingsError(f"expected a JSON object with self_attention_kwargs, got a JSON {type(cfg).__name__}")
    kw = cfg.get("self_attention_kwargs", cfg if "tile_size" in cfg else None)
    if kw is None:
        raise SettingsError("has no self_attention_kwargs (with tile_size, window_size, lowres_window_size, "
                            "lowres_reduction_rate), as the official training config has")
    if not isinstance(kw, dict):
        raise SettingsError(f"self_attention_kwargs must be a JSON object, got {type(kw).__name__}")
    missing = [k for k in OFFICIAL_KEYS.values() if k not in kw]
    if missing:
        raise SettingsError(f"self_attention_kwargs lacks {', '.join(missing)}")
    k = {f: f"self_attention_kwargs.{key}" for f, key in OFFICIAL_KEYS.items()}
    return VortaConfig(tile=_triple(kw["tile_size"], k["tile"]), window=_triple(kw["window_size"], k["window"]),
                       bucket=_triple(kw["lowres_window_size"], k["bucket"]),
                       ratio=_ratio(kw["lowres_reduction_rate"], k["ratio"]))


def _int_list(text: str, name: str) -> object:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise SettingsError(f"metadata '{name}' must be three integers like '5,9,8', got {text!r}") from None


def settings_from_metadata(meta: Mapping[str, str]) -> VortaConfig:
    """The settings from our metadata strings (``tile_size='5,9,8'``, ``coreset_ratio='0.5'``)."""
    missing = [k for k in METADATA_KEYS.values() if k not in meta]
    if missing:
        raise SettingsError(f"metadata lacks {', '.join(missing)}")
    k = METADATA_KEYS
    try:
        ratio = float(meta[k["ratio"]])
    except ValueError:
        raise SettingsError(f"metadata '{k['ratio']}' must be a number, got {meta[k['ratio']]!r}") from None
    return VortaConfig(
        tile=_triple(_int_list(meta[k["tile"]], k["tile"]), f"metadata '{k['tile']}'"),
        window=_triple(_int_list(meta[k["window"]], k["window"]), f"metadata '{k['window']}'"),
        bucket=_triple(_int_list(meta[k["bucket"]], k["bucket"]), f"metadata '{k['bucket']}'"),
        ratio=_ratio(ratio, f"metadata '{k['ratio']}'"))


def settings_metadata(config: VortaConfig) -> Dict[str, str]:
    """The metadata strings ``settings_from_metadata`` reads back."""
    fmt = lambda t: ",".join(str(int(v)) for v in t)  # noqa: E731
    k = METADATA_KEYS
    return {k["tile"]: fmt(config.tile), k["window"]: fmt(config.window), k["bucket"]: fmt(config.bucket),
            k["ratio"]: repr(float(config.ratio))}
