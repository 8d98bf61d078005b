"""Router files: the official ``router.pt`` and our ``.safetensors`` format with metadata.

The official loader keeps only keys that match the model and silently drops the rest, so a prefix
mismatch yields random routers without any error (spec §2.1).  Here every expected key must be present
with the expected shape and finite values, and every problem raises ``RouterFileError`` naming the file,
what is wrong and what to do: a bad router must never turn into a silently wrong (or silently dense) video.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from typing import Dict, List, Optional, Tuple

import torch

from .config import BRANCHES, FAMILIES, PRESETS, VortaConfig
from .router import NUM_BRANCHES, RouterSet
from .router_settings import SettingsError, settings_from_config_json, settings_from_metadata, settings_metadata

FORMAT_NAME = "vorta-router"
FORMAT_VERSION = "1"
SAFETENSORS_EXTENSIONS = (".safetensors",)
CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".bin")
# The one list of router file types: load_router_file accepts them in any case, models/vorta lists them.
ROUTER_EXTENSIONS = SAFETENSORS_EXTENSIONS + CHECKPOINT_EXTENSIONS
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_orig_mod.", "module.", "transformer.", "model.")
_KEY = re.compile(r"^(blocks|transformer_blocks|single_transformer_blocks)\.(\d+)\.router\.linear\.(weight|bias)$")

_AGAIN = "download or convert it again"
_OFFICIAL = ("use the official router.pt (Hugging Face Wenhao-Sun/VORTA, <model>/train/ckpt/step-000100/router.pt) "
             "or a .safetensors converted from it")
# the converter script of this install, wherever ComfyUI Manager, comfy-cli or git put the pack's folder
_CONVERT_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "convert_router.py")
_CONVERT = ("use the official router.pt as it is, or convert it again "
            f"(`python {_CONVERT_SCRIPT} router.pt out.safetensors`)")
_CONFIG_HINT = ("this file is read for the router's tile/window/bucket settings; fix it, "
                "or remove it to use the official settings for the router's model")


class RouterFileError(ValueError):
    """A router file that cannot be used; the message says what is wrong and what to do."""


def is_safetensors(path: str) -> bool:
    """Our format, by extension in any case (``.SAFETENSORS`` from case-insensitive file systems)."""
    return os.fspath(path).lower().endswith(SAFETENSORS_EXTENSIONS)


def is_checkpoint(path: str) -> bool:
    """An official torch checkpoint (``router.pt``; ``.pth``/``.bin`` are the same pickle format)."""
    return os.fspath(path).lower().endswith(CHECKPOINT_EXTENSIONS)


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _check_file(path: str) -> None:
    """Problems that deserve their own message before a parser sees the file (its error would be cryptic)."""
    if not os.path.exists(path):
        raise RouterFileError(f"{path}: file not found; check the path (router files go in ComfyUI/models/vorta)")
    if os.path.isdir(path):
        raise RouterFileError(f"{path}: is a folder; pick the router file inside it "
                              "(the official layout has <model>/train/ckpt/step-000100/router.pt)")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise RouterFileError(f"{path}: cannot be read ({e.strerror}); check the file's permissions") from None
    if not head:
        raise RouterFileError(f"{path}: is empty (0 bytes), the download or copy did not finish; {_AGAIN}")
    if head.startswith(b"version https://git-lfs"):
        raise RouterFileError(f"{path}: is a Git LFS pointer, not the weights; fetch the real file "
                              "(`git lfs pull` in the cloned repository, or download it from the Hugging Face page)")


def _first_line(e: BaseException) -> str:
    """A parser's error in one short line: its first sentence (torch appends paragraphs of advice)."""
    line = next((x.strip() for x in str(e).splitlines() if x.strip()), "").split(". ")[0]
    return f"{type(e).__name__}: {line[:160]}" if line else type(e).__name__


def _torch_load_problem(e: Exception) -> str:
    """torch.load's error in one line, with what it means for a router file."""
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    if unsafe:
        return (f"holds a Python object ({unsafe.group(1)}) besides tensors, which is refused for safety "
                f"(router files are loaded with torch.load(weights_only=True)); {_OFFICIAL}")
    if isinstance(e, pickle.UnpicklingError):
        return (f"is not a torch checkpoint that loads safely (torch.load with weights_only=True refused it), "
                f"or it is damaged; {_OFFICIAL}")
    return f"is truncated or damaged ({_first_line(e)}); {_AGAIN}"


def _check_tensors(source: str, name: str, w: torch.Tensor, b: torch.Tensor) -> None:
    if w.layout != torch.strided or b.layout != torch.strided:
        raise RouterFileError(f"{source}: {name} router tensors must be dense, got {w.layout}/{b.layout}; {_OFFICIAL}")
    if not (w.is_floating_point() and b.is_floating_point()):
        raise RouterFileError(f"{source}: {name} router tensors must be floating point, got {w.dtype}/{b.dtype}; "
                              f"{_OFFICIAL}")
    if (w.ndim != 2 or b.ndim != 1 or w.shape[0] != b.shape[0] or w.shape[0] % NUM_BRANCHES
            or w.numel() == 0):
        raise RouterFileError(
            f"{source}: {name} router has weight {tuple(w.shape)} and bias {tuple(b.shape)}; expected weight "
            f"[heads*3, dim] and bias [heads*3] with heads, dim >= 1; {_OFFICIAL}")
    for part, t in (("weight", w), ("bias", b)):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise RouterFileError(
                f"{source}: {name}.router.linear.{part} has {bad} NaN/inf values (those heads would silently run "
                f"full attention); the file is damaged: {_AGAIN}")


def routers_from_state_dict(state: Dict[str, torch.Tensor], source: str = "router file",
                            metadata: Optional[Dict[str, str]] = None) -> RouterSet:
    """Build a RouterSet from official diffusers-named keys, checking that the key set is complete and every
    value is a finite floating-point tensor of the router shape."""
    if not isinstance(state, dict):
        raise RouterFileError(f"{source}: holds a {type(state).__name__}, not a dict of router tensors; {_OFFICIAL}")
    if not state:
        raise RouterFileError(f"{source}: holds no tensors (an empty dict); {_AGAIN}")
    if {"state", "param_groups"} <= set(state):
        raise RouterFileError(f"{source}: is an optimizer state (optimizer.pt), not the routers; "
                              "pick the router.pt beside it")
    non_tensor = [f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise RouterFileError(f"{source}: entries that are not tensors: {non_tensor[:5]}; "
                              f"this is not a router checkpoint; {_OFFICIAL}")
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
            f"'transformer_blocks.N.router...' for HunyuanVideo; first keys: {list(state)[:3]}); "
            f"is this a model checkpoint? {_OFFICIAL}")
    if unknown:
        raise RouterFileError(f"{source}: {len(unknown)} unexpected keys, e.g. {unknown[:3]}, besides the router "
                              f"keys; {_OFFICIAL}")
    stacks = {s for s, _ in layers}
    if stacks == {"blocks"}:
        family, order = "wan", ["blocks"]
    elif stacks <= {"transformer_blocks", "single_transformer_blocks"}:
        family, order = "hunyuan", ["transformer_blocks", "single_transformer_blocks"]
    else:
        raise RouterFileError(f"{source}: mixes Wan ('blocks') and HunyuanVideo keys: {sorted(stacks)}; {_OFFICIAL}")
    if family == "hunyuan" and stacks != set(order):
        raise RouterFileError(f"{source}: HunyuanVideo routers need both double and single blocks; missing "
                              f"{sorted(set(order) - stacks)}; {_AGAIN}")

    names, weights, biases = [], [], []
    for stack in order:
        idx = sorted(i for s, i in layers if s == stack)
        missing_idx = sorted(set(range(idx[-1] + 1)) - set(idx))
        if missing_idx:
            raise RouterFileError(f"{source}: missing routers for {stack}.{missing_idx[:5]} (layers must be "
                                  f"0..{idx[-1]}); the file is incomplete: {_AGAIN}")
        for i in idx:
            entry = layers[(stack, i)]
            for part in ("weight", "bias"):
                if part not in entry:
                    raise RouterFileError(f"{source}: missing key {stack}.{i}.router.linear.{part}; "
                                          f"the file is incomplete: {_AGAIN}")
            _check_tensors(source, f"{stack}.{i}", entry["weight"], entry["bias"])
            names.append(f"{stack}.{i}")
            weights.append(entry["weight"])
            biases.append(entry["bias"])
    shapes = {tuple(w.shape) for w in weights}
    if len(shapes) != 1:
        raise RouterFileError(f"{source}: router layers disagree in shape: {sorted(shapes)}; {_OFFICIAL}")
    return RouterSet(family, names, torch.stack(weights), torch.stack(biases), dict(metadata or {}))


def load_official_checkpoint(path: str) -> RouterSet:
    """Load the official ``router.pt`` (a torch pickle of diffusers-named tensors); only with weights_only=True,
    so a file cannot run code when it is opened."""
    _check_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors: truncated files, non-tensor objects, not a torch file at all
        raise RouterFileError(f"{path}: {_torch_load_problem(e)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return routers_from_state_dict(state, source=path, metadata={"source": os.path.basename(path)})


def training_config_beside(router_path: str) -> Optional[str]:
    """The official ``config.json`` that belongs to a ``router.pt``: in the same folder, or, in the official layout
    ``<train>/ckpt/step-N/router.pt``, in ``<train>/``.  Never searched further up, so a router file dropped into
    ``models/vorta`` cannot pick up an unrelated config.json from ComfyUI's folders."""
    folder = os.path.dirname(os.path.abspath(router_path))
    candidates = [folder]
    ckpt = os.path.dirname(folder)
    if os.path.basename(folder).startswith("step-") and os.path.basename(ckpt) == "ckpt":
        candidates.append(os.path.dirname(ckpt))
    return next((c for c in (os.path.join(d, "config.json") for d in candidates) if os.path.isfile(c)), None)


def read_training_config(path: str) -> VortaConfig:
    """The sparse settings from an official ``config.json`` (``self_attention_kwargs``)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise RouterFileError(f"{path}: config file not found; check the path") from None
    except json.JSONDecodeError as e:
        raise RouterFileError(f"{path}: broken JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                              f"{_CONFIG_HINT}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RouterFileError(f"{path}: cannot be read as a JSON text file ({_first_line(e)}); {_CONFIG_HINT}") from None
    try:
        return settings_from_config_json(cfg)
    except SettingsError as e:
        raise RouterFileError(f"{path}: {e}; {_CONFIG_HINT}") from None


def default_training_config(routers: RouterSet) -> Tuple[VortaConfig, str]:
    """The settings the official routers were trained with (spec §2.3), by family."""
    preset = PRESETS["hunyuan-720p" if routers.family == "hunyuan" else "wan2.1-14b-720p"]
    return preset.config, preset.name


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
        "branch_order": ",".join(BRANCHES), **settings_metadata(config),
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_file(tensors, path, metadata=meta)


def _check_metadata(meta: Dict[str, str], path: str) -> None:
    """Our metadata header before the tensors are read: format, version, and well-formed shape fields."""
    if meta.get("format") != FORMAT_NAME:
        raise RouterFileError(f"{path}: not a VORTA router file (metadata format={meta.get('format')!r}); "
                              "use the official router.pt as it is, or convert it with `convert_router.py` in the "
                              "pack's folder")
    version = meta.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise RouterFileError(f"{path}: router file format version {version!r}, this ComfyUI-VORTA reads version "
                              f"{FORMAT_VERSION}; update ComfyUI-VORTA, or {_CONVERT}")
    missing = [k for k in ("family", "layers", "heads", "dim") if k not in meta]
    if missing:
        raise RouterFileError(f"{path}: metadata lacks {', '.join(missing)}; {_CONVERT}")
    if meta["family"] not in FAMILIES:
        raise RouterFileError(f"{path}: metadata family {meta['family']!r} is not one of {', '.join(FAMILIES)}; "
                              f"{_CONVERT}")
    for key in ("layers", "heads", "dim"):
        if not meta[key].isdigit():
            raise RouterFileError(f"{path}: metadata '{key}' must be an integer, got {meta[key]!r}; {_CONVERT}")
    if meta.get("branch_order", ",".join(BRANCHES)) != ",".join(BRANCHES):
        raise RouterFileError(f"{path}: branch order {meta['branch_order']!r} is not {','.join(BRANCHES)!r}; "
                              f"{_CONVERT}")


def load_safetensors(path: str) -> Tuple[RouterSet, VortaConfig]:
    """Load our format; checks metadata against the tensors and returns the training-time settings."""
    from safetensors import safe_open

    _check_file(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # the Rust parser's errors: bad header JSON, truncated data, wrong metadata types
        raise RouterFileError(f"{path}: not a readable safetensors file ({_first_line(e)}); the file is truncated "
                              f"or damaged: {_AGAIN}") from None
    _check_metadata(meta, path)
    routers = routers_from_state_dict(state, source=path, metadata=meta)
    for key, actual in (("family", routers.family), ("layers", str(routers.num_layers)),
                        ("heads", str(routers.heads)), ("dim", str(routers.dim))):
        if meta[key] != actual:
            raise RouterFileError(f"{path}: metadata says {key}={meta[key]} but the tensors give {actual}; "
                                  f"the file was edited or damaged: {_CONVERT}")
    try:
        config = settings_from_metadata(meta)
    except SettingsError as e:
        raise RouterFileError(f"{path}: {e}; {_CONVERT}") from None
    return routers, config


def load_router_file(path: str) -> Tuple[RouterSet, VortaConfig]:
    """Load either format by extension (any case).  An official .pt gets the training settings of the config.json
    that belongs to it (``training_config_beside``), else the official settings for its model family, so the file
    works as it is downloaded, under any name, with or without its config.json."""
    if is_safetensors(path):
        return load_safetensors(path)
    if is_checkpoint(path):
        routers = load_official_checkpoint(path)
        config_json = training_config_beside(path)
        config = read_training_config(config_json) if config_json else default_training_config(routers)[0]
        return routers, config
    raise RouterFileError(f"{path}: unknown router file type; expected {', '.join(ROUTER_EXTENSIONS)} "
                          "(our .safetensors or the official router.pt)")


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
