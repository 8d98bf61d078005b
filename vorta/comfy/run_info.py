"""What a calibration run used, read from ComfyUI objects for the router file's metadata: the model file, the
sampler, the scheduler behind a SIGMAS tensor, the shift, and which part of the schedule it covered (experts)."""
from __future__ import annotations

import os
from typing import Optional

import torch


def model_file_name(model) -> str:
    """The file a MODEL was loaded from where ComfyUI records it (``cached_patcher_init``, newer ComfyUI), else ''."""
    init = getattr(model, "cached_patcher_init", None)
    try:
        path = init[1][0]
    except (TypeError, IndexError, KeyError):
        return ""
    return os.path.basename(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else ""


# the inputs that name a model file in ComfyUI's loaders (UNETLoader, CheckpointLoaderSimple, GGUF loaders), and
# a looser one read only on a node with no model input of its own (a loader such as KJNodes' DiffusionModelLoaderKJ)
_FILE_INPUTS = ("unet_name", "ckpt_name")
_SOURCE_FILE_INPUTS = ("model_name",)


def model_file_in_prompt(prompt, node_id, input_name: str = "model") -> str:
    """The model file behind ``input_name`` of node ``node_id`` in an API prompt (ComfyUI's hidden PROMPT): the
    link followed back through model-patching nodes (LoRA, ModelSamplingSD3, ...) to the loader; '' if none.
    Older ComfyUI does not record the file on the MODEL itself, but the prompt always says what was loaded."""
    seen = set()
    try:
        value = prompt[str(node_id)]["inputs"].get(input_name)
        while isinstance(value, list) and value and str(value[0]) not in seen:
            seen.add(str(value[0]))
            inputs = prompt[str(value[0])].get("inputs", {})
            keys = _FILE_INPUTS if "model" in inputs else _FILE_INPUTS + _SOURCE_FILE_INPUTS
            for key in keys:
                if isinstance(inputs.get(key), str):
                    return os.path.basename(inputs[key])
            value = inputs.get("model")
    except (KeyError, TypeError, AttributeError):
        pass
    return ""


def sampler_name(sampler) -> str:
    """``euler`` for ComfyUI's KSAMPLER objects (``sample_euler``), else the object's class name."""
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", "") or type(sampler).__name__
    return name[len("sample_"):] if name.startswith("sample_") else name


def model_shift(model_sampling) -> Optional[float]:
    shift = getattr(model_sampling, "shift", None)
    try:
        return float(shift) if shift is not None else None
    except (TypeError, ValueError):  # pragma: no cover
        return None


def scheduler_name(model_sampling, sigmas: torch.Tensor, max_factor: int = 4) -> str:
    """The ComfyUI scheduler (and steps) SIGMAS came from: ``simple``, or ``simple, steps 8-20 of 20`` for a part
    cut out with SplitSigmas (two-expert models); ``custom`` when none matches."""
    import comfy.samplers

    s = sigmas.detach().reshape(-1).double().cpu()
    n = s.numel() - 1
    if n < 1:
        return "custom"

    def schedule(name: str, total: int):
        try:
            return comfy.samplers.calculate_sigmas(model_sampling, name, total).double().cpu()
        except Exception:  # a scheduler that does not apply to this model
            return None

    for name in comfy.samplers.SCHEDULER_NAMES:  # the whole schedule: the common case, tried first
        full = schedule(name, n)
        if full is not None and full.shape == s.shape and torch.allclose(full, s, rtol=1e-4, atol=1e-6):
            return name
    for name in comfy.samplers.SCHEDULER_NAMES:  # one part of a longer schedule (SplitSigmas)
        for total in range(n + 1, max_factor * n + 1):
            full = schedule(name, total)
            if full is None:
                break
            for start in range(0, full.numel() - s.numel() + 1):
                if torch.allclose(full[start:start + s.numel()], s, rtol=1e-4, atol=1e-6):
                    return f"{name}, steps {start}-{start + n} of {total}"
    return "custom"


def expert_part(model_sampling, sigmas: torch.Tensor) -> str:
    """Which part of the model's noise range SIGMAS covers: ``all``, ``high-noise`` (ends before sigma 0: the first
    expert of a two-expert model), ``low-noise`` (starts below the model's largest sigma) or ``middle``."""
    s = sigmas.reshape(-1).double().cpu()
    top = float(getattr(model_sampling, "sigma_max", s[0]))
    starts_top = float(s[0]) >= top * (1 - 1e-3)
    ends_zero = float(s[-1]) <= 1e-6 or float(s[-1]) <= float(getattr(model_sampling, "sigma_min", 0.0)) * (1 + 1e-3)
    if starts_top and ends_zero:
        return "all"
    if starts_top:
        return "high-noise"
    return "low-noise" if ends_zero else "middle"
