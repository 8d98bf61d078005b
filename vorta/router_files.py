"""Router files: the official ``router.pt`` and our ``.safetensors`` format with metadata.

The official loader keeps only keys that match the model and silently drops the rest, so a prefix
mismatch yields random routers without any error (spec §2.1).  Here every expected key must be present
with the expected shape, and every problem raises ``RouterFileError`` naming the file and what is wrong.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Tuple

import torch

from .config import BRANCHES, FAMILIES, PRESETS, VortaConfig
from .router import NUM_BRANCHES, RouterSet

FORMAT_NAME = "vorta-router"
FORMAT_VERSION = "1"
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_orig_mod.", "module.", "transformer.", "model.")
_KEY = re.compile(r"^(blocks|transformer_blocks|single_transformer_blocks)\.(\d+)\.router\.linear\.(weight|bias)$")


class RouterFileError(ValueError):
    """A router file that cannot be used; the message says what is wrong and what to do."""


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def routers_from_state_dict(state: Dict[str, torch.Tensor], source: str = "router file",
                            metadata: Optional[Dict[str, str]] = None) -> RouterSet:
    """Build a RouterSet from official diffusers-named keys, checking that the key set is complete."""
    if not isinstance(state, dict) or not state:
        raise RouterFileError(f"{source}: expected a non-empty dict of tensors, got {type(state).__name__}")
    non_tensor = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise RouterFileError(f"{source}: entries that are not tensors: {non_tensor[:5]}; this is not a router checkpoint")
    layers: Dict[Tuple[str, int], Dict[str, torch.Tensor]] = {}
    unknown: List[str] = []
    for raw_key, value in state.items():
        m = _KEY.match(_strip_wrappers(str(raw_key)))
        if not m:
            unknown.append(str(raw_key))
            continue
        layers.setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = value
    if not layers:
        raise RouterFileError(
            f"{source}: no router keys found (expected 'blocks.N.router.linear.weight' for Wan or "
            f"'transformer_blocks.N.router...' for HunyuanVideo; first keys: {list(state)[:3]})")
    if unknown:
        raise RouterFileError(f"{source}: {len(unknown)} unexpected keys, e.g. {unknown[:3]}; is this a router file?")
    stacks = {s for s, _ in layers}
    if stacks == {"blocks"}:
        family, order = "wan", ["blocks"]
    elif stacks <= {"transformer_blocks", "single_transformer_blocks"}:
        family, order = "hunyuan", ["transformer_blocks", "single_transformer_blocks"]
    else:
        raise RouterFileError(f"{source}: mixes Wan ('blocks') and HunyuanVideo keys: {sorted(stacks)}")
    if family == "hunyuan" and stacks != set(order):
        missing_stack = set(order) - stacks
        raise RouterFileError(f"{source}: HunyuanVideo routers need both double and single blocks; missing {missing_stack}")

    names, weights, biases = [], [], []
    for stack in order:
        idx = sorted(i for s, i in layers if s == stack)
        missing_idx = sorted(set(range(idx[-1] + 1)) - set(idx))
        if missing_idx:
            raise RouterFileError(f"{source}: missing routers for {stack}.{missing_idx[:5]} (layers must be 0..{idx[-1]})")
        for i in idx:
            entry = layers[(stack, i)]
            for part in ("weight", "bias"):
                if part not in entry:
                    raise RouterFileError(f"{source}: missing key {stack}.{i}.router.linear.{part}")
            w, b = entry["weight"], entry["bias"]
            if not (w.is_floating_point() and b.is_floating_point()):
                raise RouterFileError(f"{source}: {stack}.{i} router tensors must be floating point, got {w.dtype}/{b.dtype}")
            if w.ndim != 2 or b.ndim != 1 or w.shape[0] != b.shape[0] or w.shape[0] % NUM_BRANCHES:
                raise RouterFileError(
                    f"{source}: {stack}.{i} router has weight {tuple(w.shape)} and bias {tuple(b.shape)}; "
                    f"expected weight [heads*3, dim] and bias [heads*3]")
            names.append(f"{stack}.{i}")
            weights.append(w)
            biases.append(b)
    shapes = {tuple(w.shape) for w in weights}
    if len(shapes) != 1:
        raise RouterFileError(f"{source}: router layers disagree in shape: {sorted(shapes)}")
    return RouterSet(family, names, torch.stack(weights), torch.stack(biases), dict(metadata or {}))


def load_official_checkpoint(path: str) -> RouterSet:
    """Load the official ``router.pt`` (a torch pickle of diffusers-named tensors) with weights_only=True."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RouterFileError(f"{path}: file not found") from None
    except Exception as e:  # pickle/zip errors: truncated files, non-tensor objects, not a torch file at all
        raise RouterFileError(
            f"{path}: not a readable router checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "The file may be truncated, or hold Python objects other than tensors (refused for safety); "
            "download router.pt again or convert it with `python -m comfyui_vorta.vorta.convert`.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return routers_from_state_dict(state, source=path, metadata={"source": os.path.basename(path)})


def read_training_config(path: str) -> VortaConfig:
    """The sparse settings from an official ``config.json`` (``self_attention_kwargs``)."""
    with open(path) as f:
        cfg = json.load(f)
    kw = cfg.get("self_attention_kwargs", cfg)
    try:
        return VortaConfig(tile=tuple(kw["tile_size"]), window=tuple(kw["window_size"]),
                           bucket=tuple(kw["lowres_window_size"]), ratio=float(kw["lowres_reduction_rate"]))
    except KeyError as e:
        raise RouterFileError(f"{path}: config.json lacks self_attention_kwargs.{e.args[0]}") from None


def default_training_config(routers: RouterSet) -> Tuple[VortaConfig, str]:
    """The settings the official routers were trained with (spec §2.3), by family."""
    preset = PRESETS["hunyuan-720p" if routers.family == "hunyuan" else "wan2.1-14b-720p"]
    return preset.config, preset.name


def _fmt(t) -> str:
    return ",".join(str(int(v)) for v in t)


def save_safetensors(routers: RouterSet, path: str, config: VortaConfig, model: str = "", extra: Optional[Dict[str, str]] = None) -> None:
    """Write routers (official key names) plus metadata the loader validates against the patched model."""
    from safetensors.torch import save_file

    tensors = {}
    for name, w, b in zip(routers.layer_names, routers.weight, routers.bias):
        tensors[f"{name}.router.linear.weight"] = w.contiguous()
        tensors[f"{name}.router.linear.bias"] = b.contiguous()
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "family": routers.family, "model": model,
        "layers": str(routers.num_layers), "heads": str(routers.heads), "dim": str(routers.dim),
        "branch_order": ",".join(BRANCHES), "tile_size": _fmt(config.tile), "window_size": _fmt(config.window),
        "bucket_size": _fmt(config.bucket), "coreset_ratio": repr(float(config.ratio)),
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_file(tensors, path, metadata=meta)


def _triple(meta: Dict[str, str], key: str, path: str):
    try:
        vals = tuple(int(v) for v in meta[key].split(","))
        assert len(vals) == 3
        return vals
    except Exception:
        raise RouterFileError(f"{path}: metadata '{key}' must be three integers, got {meta.get(key)!r}") from None


def load_safetensors(path: str) -> Tuple[RouterSet, VortaConfig]:
    """Load our format; checks metadata against the tensors and returns the training-time settings."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise RouterFileError(f"{path}: file not found") from None
    except Exception as e:
        raise RouterFileError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); "
                              "the file may be truncated, download or convert it again") from None
    if meta.get("format") != FORMAT_NAME:
        raise RouterFileError(f"{path}: not a VORTA router file (metadata format={meta.get('format')!r}); "
                              "convert an official router.pt with `python -m comfyui_vorta.vorta.convert`")
    if meta.get("branch_order", ",".join(BRANCHES)) != ",".join(BRANCHES):
        raise RouterFileError(f"{path}: branch order {meta['branch_order']!r} is not {','.join(BRANCHES)!r}")
    routers = routers_from_state_dict(state, source=path, metadata=meta)
    for key, actual in (("family", routers.family), ("layers", str(routers.num_layers)),
                        ("heads", str(routers.heads)), ("dim", str(routers.dim))):
        if key in meta and meta[key] != actual:
            raise RouterFileError(f"{path}: metadata says {key}={meta[key]} but the tensors give {actual}")
    try:
        ratio = float(meta["coreset_ratio"])
    except Exception:
        raise RouterFileError(f"{path}: metadata 'coreset_ratio' missing or not a number") from None
    config = VortaConfig(tile=_triple(meta, "tile_size", path), window=_triple(meta, "window_size", path),
                         bucket=_triple(meta, "bucket_size", path), ratio=ratio)
    return routers, config


def load_router_file(path: str) -> Tuple[RouterSet, VortaConfig]:
    """Load either format by extension; the official .pt gets the official training settings."""
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    if path.endswith((".pt", ".pth", ".bin")):
        routers = load_official_checkpoint(path)
        config, _ = default_training_config(routers)
        return routers, config
    raise RouterFileError(f"{path}: unknown router file type; expected .safetensors or the official router.pt")


def check_fits(routers: RouterSet, family: str, layers: int, heads: int, dim: int, source: str = "router") -> None:
    """Raise a clear error when a router set does not fit the model it is applied to."""
    if family not in FAMILIES:
        raise RouterFileError(f"unknown model family {family!r}")
    problems = []
    if routers.family != family:
        problems.append(f"it is a {routers.family} router but the model is {family}")
    if routers.num_layers != layers:
        problems.append(f"{routers.num_layers} routed layers vs {layers} in the model")
    if routers.heads != heads:
        problems.append(f"{routers.heads} heads vs {heads}")
    if routers.dim != dim:
        problems.append(f"embedding dim {routers.dim} vs {dim}")
    if problems:
        raise RouterFileError(f"{source} does not fit this model: " + "; ".join(problems) +
                              ". Use the router trained for this model (e.g. wan-14B for Wan2.1-T2V-14B), "
                              "or routing mode 'schedule' for models without a released router.")
