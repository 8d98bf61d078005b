"""End-to-end step time inside ComfyUI: real model architectures, random weights, patched like a workflow.

    python bench/e2e.py --model wan14b [--res 720p] [--frames 81] [--md out.md]
    python bench/e2e.py --model wan1.3b,wan14b,hunyuan --md e2e.md   # one process, in order
    python bench/e2e.py --model wan,hunyuan --tiny                   # CPU smoke run
    python bench/e2e.py --model wan14b --configs dense,mix \
        --stacks bf16:triton,bf16:triton-int8,fp8_e4m3fn_fast:triton  # weight dtype x VORTA backend, side by side

What it does (issue 5; weight dtypes and stacks: issue 15):

* **Model**: ComfyUI (``COMFYUI_PATH``) loads the diffusion model through ``comfy.sd.load_diffusion_model_state_dict``
  -- the function ``UNETLoader`` (Load Diffusion Model) reaches through ``comfy.sd.load_diffusion_model`` once the
  file is read -- with the ``model_options`` that UNETLoader builds for its ``weight_dtype`` input (``--weight-dtype``:
  default, fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2; ``bf16`` = ``default`` on a bf16 checkpoint, the default). So the
  weight dtype, the manual-cast dtype and the operations (``fp8_ops`` with fp8 matmuls when ComfyUI finds fp8 compute
  for ``fp8_e4m3fn_fast``) are ComfyUI's own decisions. The "checkpoint" is a bf16 state dict with the keys and
  shapes of the real file (the diffusion model ComfyUI builds for the ``unet_config`` that ``comfy.model_detection``
  detects for the real checkpoint, instantiated on the meta device); its tensors are views into one random buffer
  (N(0, 0.02) at a different offset per key, norm scales 1), so no 28 GB file is read, written or held. ComfyUI
  detects the model class from it as it would from the file. Step time does not depend on the weight values.
  ``--build direct`` keeps the earlier builder (``get_model(device=cuda)`` + in-place fill; bf16 only).
* **Patch**: the Apply VORTA node's own ``execute`` (``nodes/apply.py``) with the node's defaults, as a workflow
  would (``--no-node`` falls back to the two lines it runs: ``build_settings`` + ``apply_vorta``); ``--backend`` is
  passed to its ``backend`` input unchecked, so the node validates it.
* **Stacks**: ``--stacks wd:backend,...`` runs each weight dtype's model once (freed before the next one is loaded: one
  model on the GPU at a time): its ``dense`` row, then the VORTA configurations for every backend listed with it. A
  summary table per model gives each stack's step time against the dense step with the same weights and against
  the bf16 dense step.
* **Dense attention**: ComfyUI's own attention function, ``attention_pytorch`` (on CUDA the bench sets ComfyUI's
  ``--use-pytorch-cross-attention`` flag, so an installed xformers is not preferred), with the SDPA backend priority
  that ``comfy.ops`` applies around every large call set to cuDNN first (``--dense-sdpa cudnn``, the default; ComfyUI
  0.3.64 puts cuDNN first itself, 0.33 FlashAttention first: ``--dense-sdpa comfy`` leaves ComfyUI's choices).
  The same priority serves VORTA's full heads and cross-attention, which run on ComfyUI's attention. The backend that
  actually ran is read back: after the ``dense`` configuration, one self- and one cross-attention call with the
  shapes, dtypes and arguments the model used are replayed under the PyTorch profiler (CPU side only) and the SDPA
  operator that ran (``aten::_scaled_dot_product_cudnn_attention`` etc.) is reported.
* **Step**: ComfyUI's ``CFGGuider.sample`` with a ``KSAMPLER`` whose sampler function calls the wrapped model at
  chosen sigmas of a 50-step ``simple`` schedule and times each call: one call = one denoising step as a sampler
  runs it (cond + uncond through ``calc_cond_batch``, ComfyUI batching them when its memory rule allows; the
  batch actually used is reported), CFG combine included. OUTER_SAMPLE / DIFFUSION_MODEL wrappers, object
  patches and the attention override all run exactly as in a workflow.
* **Configurations**: ``dense`` (the unpatched model on ComfyUI's attention), VORTA forced ``full`` /
  ``sliding`` / ``coreset``, ``mix`` (a fixed random per-(layer, head) assignment with exactly 50 % sliding /
  48 % coreset / 2 % full, delivered as a router file whose decisions are constant: zero weights, one-hot
  biases -- router mode runs unchanged) and ``schedule`` (the training-free mode over a 50-step run: the
  distinct per-step decision tables from the routing preview, one representative step timed per table, or the
  forced configuration's time reused when the table is identical to it, weighted by the number of steps).
* **Attention share**: every timed step records CUDA events (no synchronisation inside the step) around each
  attention call -- the override ComfyUI already supports for dense, VORTA's own attention entry point and its
  coreset / sliding branch callables for the patched model. Self-attention, cross-attention and other attention
  (HunyuanVideo's token refiner) are separated by shape; the rest of the step is "rest of the model".
  The ``mix`` configuration also runs one step without instrumentation to show what it costs.
* **Memory**: ``torch.cuda.max_memory_allocated`` over each configuration's run (weights included), reset
  between configurations.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import logging
import os
import pathlib
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from comfyui_vorta.vorta.config import BRANCHES, CORESET, FULL, SLIDING, VortaConfig, preset_for
from comfyui_vorta.vorta.geometry import grid_from_latent
from comfyui_vorta.vorta.comfy.setting_specs import DEFAULTS as NODE_DEFAULTS
from comfyui_vorta.vorta.router import RouterSet, official_layer_names

DEFAULT_BACKEND = str(NODE_DEFAULTS["backend"])  # Apply VORTA's default backend input


SCHEDULE_STEPS = 50
MIX = {"sliding": 0.50, "coreset": 0.48, "full": 0.02}
TINY_CFG = dict(tile_t=1, tile_h=2, tile_w=2, window_t=3, window_h=3, window_w=3, bucket_t=1, bucket_h=2, bucket_w=2,
                ratio=0.5)


# ----------------------------------------------------------------------------------------------- models
@dataclass
class Spec:
    name: str
    family: str
    title: str
    unet: dict  # what comfy.model_detection would detect from the real checkpoint
    res: Tuple[int, int]  # (height, width) of the default resolution
    frames: int
    channels: int  # latent channels
    spatial: int  # VAE spatial compression
    text: int  # text tokens of the conditioning
    cfg: float = 5.0
    full_warmup: bool = False  # one full-size warm-up step for dense configurations too (cheap models only)
    budget_s: float = 20.0  # per configuration: timed repeats stop once this much time was spent (at least one)
    clean_step: bool = True  # mix: one extra step without the timing events (what instrumentation costs)


def _wan_unet(dim, ffn, heads, layers, in_dim=16, out_dim=16):
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": dim, "out_dim": out_dim, "num_heads": heads,
            "ffn_dim": ffn, "num_layers": layers, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
            "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": in_dim}


def _hv_unet(hidden, heads, double, single):
    return {"image_model": "hunyuan_video", "in_channels": 16, "patch_size": [1, 2, 2], "out_channels": 16,
            "vec_in_dim": 768, "axes_dim": [16, 56, 56], "meanflow": False, "context_in_dim": 4096,
            "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": double,
            "depth_single_blocks": single, "theta": 256, "qkv_bias": True, "byt5": False, "guidance_embed": True}


MODELS: Dict[str, Spec] = {
    "wan1.3b": Spec("wan1.3b", "wan", "Wan2.1-T2V-1.3B", _wan_unet(1536, 8960, 12, 30), (480, 832), 81, 16, 8, 512,
                    full_warmup=True, budget_s=5.0),
    "wan14b": Spec("wan14b", "wan", "Wan2.1-T2V-14B", _wan_unet(5120, 13824, 40, 40), (720, 1280), 81, 16, 8, 512),
    # Wan2.2 TI2V-5B: 48-channel latent, 16x spatial compression; its 720p is 1280x704
    "wan5b": Spec("wan5b", "wan", "Wan2.2-TI2V-5B", _wan_unet(3072, 14336, 24, 30, 48, 48), (704, 1280), 121, 48, 16,
                  512, budget_s=15.0, clean_step=False),
    "hunyuan": Spec("hunyuan", "hunyuan", "HunyuanVideo-T2V-13B", _hv_unet(3072, 24, 20, 40), (720, 1280), 129, 16, 8,
                    80, clean_step=False),
}
TINY: Dict[str, Spec] = {
    "wan": Spec("wan", "wan", "tiny Wan", _wan_unet(512, 512, 4, 3), (64, 80), 9, 16, 8, 16, full_warmup=True,
                budget_s=0.0),
    "wan5b": Spec("wan5b", "wan", "tiny Wan2.2-5B", _wan_unet(512, 512, 4, 3, 48, 48), (128, 160), 9, 48, 16, 16,
                  full_warmup=True, budget_s=0.0),
    "hunyuan": Spec("hunyuan", "hunyuan", "tiny HunyuanVideo", _hv_unet(512, 4, 2, 2), (64, 80), 9, 16, 8, 8,
                    full_warmup=True, budget_s=0.0),
}
RES = {"480p": (480, 832), "720p": (720, 1280)}


def parse_res(text: Optional[str], spec: Spec) -> Tuple[int, int]:
    if not text:
        return spec.res
    if text == "720p" and spec.name == "wan5b":
        return spec.res  # 1280x704, the model's own 720p
    if text in RES:
        return RES[text]
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def latent_shape(spec: Spec, res: Tuple[int, int], frames: int) -> Tuple[int, ...]:
    h, w = res
    return (1, spec.channels, (frames - 1) // 4 + 1, h // spec.spatial, w // spec.spatial)


# ---------------------------------------------------------------------------------------------- ComfyUI
def import_comfy(cpu: bool, pytorch_attention: bool = False):
    """Import ComfyUI from COMFYUI_PATH (like tests/integration): stubs for torchvision / av when missing.
    ``pytorch_attention``: ComfyUI's ``--use-pytorch-cross-attention`` (attention_pytorch even where xformers is
    installed, which ComfyUI would otherwise prefer)."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        raise SystemExit("COMFYUI_PATH is not set: point it at a ComfyUI checkout (tested at 0.3.64)")
    if not (pathlib.Path(path) / "comfy" / "sd.py").is_file():
        raise SystemExit(f"COMFYUI_PATH={path} does not look like a ComfyUI checkout (no comfy/sd.py)")
    if path not in sys.path:
        sys.path.insert(0, path)
    import importlib.util

    stubs = os.environ.get("VORTA_COMFYUI_STUBS") or str(pathlib.Path(path).resolve().parent / "comfyui_stubs")
    if importlib.util.find_spec("torchvision") is None and pathlib.Path(stubs, "torchvision").is_dir():
        sys.path.insert(0, stubs)
    from comfy.cli_args import args

    args.cpu = cpu
    # keep the model where it was built: the benchmark builds it on the GPU and never offloads it
    args.highvram = not cpu
    if pytorch_attention:
        args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401
    import comfy.sd  # noqa: F401
    import comfy.samplers  # noqa: F401


def set_dense_sdpa(choice: str) -> str:
    """``--dense-sdpa``: the SDPA backend priority ComfyUI's ``comfy.ops.scaled_dot_product_attention`` applies around
    every large attention call (``SDPA_BACKEND_PRIORITY``, read at call time). 'cudnn' moves cuDNN to the front (as
    ComfyUI 0.3.64 has it; 0.33 puts FlashAttention first), 'comfy' leaves ComfyUI's order. Returns a description."""
    import comfy.ops

    prio = getattr(comfy.ops, "SDPA_BACKEND_PRIORITY", None)
    if prio is None:
        return "ComfyUI sets no SDPA priority here (no CUDA, or torch without set_priority): PyTorch's own choice"
    own = " > ".join(b.name for b in prio)
    if choice == "cudnn":
        from torch.nn.attention import SDPBackend

        prio[:] = [SDPBackend.CUDNN_ATTENTION] + [b for b in prio if b != SDPBackend.CUDNN_ATTENTION]
        now = " > ".join(b.name for b in prio)
        return f"SDPA priority {now} (set by --dense-sdpa cudnn; this ComfyUI's own: {own})"
    return f"SDPA priority {own} (ComfyUI's own, --dense-sdpa comfy)"


def sdpa_priority():
    """The same priority as the process-wide default during sampling, for the calls ComfyUI sends to SDPA without
    its context (small inputs in 0.33) and VORTA's own; a no-op where ComfyUI sets none."""
    import contextlib

    import comfy.ops

    prio = getattr(comfy.ops, "SDPA_BACKEND_PRIORITY", None)
    if prio is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(list(prio), set_priority=True)


SDPA_OPS = (  # PyTorch's SDPA dispatch targets, most specific first -> what they are
    ("_scaled_dot_product_cudnn_attention", "cuDNN"),
    ("_scaled_dot_product_flash_attention_for_cpu", "flash (CPU)"),
    ("_scaled_dot_product_flash_attention", "FlashAttention-2 (PyTorch SDPA)"),
    ("_scaled_dot_product_efficient_attention", "memory-efficient (PyTorch SDPA)"),
    ("_scaled_dot_product_fused_attention_overrideable", "fused (overrideable)"),
    ("_scaled_dot_product_attention_math", "math (PyTorch SDPA)"),
)


@dataclass
class TensorSpec:
    shape: Tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def make(self) -> torch.Tensor:
        if self.dtype.is_floating_point:
            return torch.randn(self.shape, device=self.device, dtype=self.dtype)
        if self.dtype == torch.bool:
            return torch.ones(self.shape, device=self.device, dtype=torch.bool)
        return torch.zeros(self.shape, device=self.device, dtype=self.dtype)


def _as_spec(x):
    return TensorSpec(tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else x


def _from_spec(x):
    return x.make() if isinstance(x, TensorSpec) else x


def probe_attention(calls: Dict[str, tuple], cuda: bool) -> Dict[str, Tuple[str, str]]:
    """Replay one recorded attention call per kind (same function, shapes, dtypes and arguments; random values) under
    the PyTorch profiler, CPU side only, and name the SDPA operator it dispatched to: kind -> (short, long)."""
    from torch.profiler import ProfilerActivity, profile

    out: Dict[str, Tuple[str, str]] = {}
    for cat, (func, args, kwargs) in calls.items():
        a = [_from_spec(x) for x in args]
        kw = {k: _from_spec(v) for k, v in kwargs.items()}
        if "transformer_options" in kwargs:
            kw["transformer_options"] = {}
        try:
            with torch.inference_mode(), sdpa_priority(), profile(activities=[ProfilerActivity.CPU]) as prof:
                func(*a, **kw)
            if cuda:
                torch.cuda.synchronize()
        except Exception as e:  # pragma: no cover - reported, not fatal
            out[cat] = ("?", f"probe failed ({type(e).__name__}: {str(e)[:120]})")
            continue
        names = {e.key for e in prof.key_averages()}
        found = [what for op, what in SDPA_OPS if f"aten::{op}" in names]
        other = sorted(n for n in names if any(w in n.lower() for w in ("flash_attn", "sage", "xformers", "kitchen")))
        fn = getattr(func, "__name__", type(func).__name__)
        short = (" + ".join(found) + " SDPA") if found else (", ".join(other) or f"`{fn}`")
        out[cat] = (short, (" + ".join(found) or ", ".join(other) or "no SDPA call") + f" (ComfyUI `{fn}`)")
        del a, kw
    return out


class ComfyLog(logging.Handler):
    """Counts ComfyUI's INFO line for a failed fp8 matmul ("Exception during fp8 op"): ComfyUI then falls back to
    the manual cast silently, so an fp8_e4m3fn_fast row would not be what it says."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.fp8_failures = 0
        self.first_fp8_failure = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            return
        if msg.startswith("Exception during fp8 op"):
            self.fp8_failures += 1
            self.first_fp8_failure = self.first_fp8_failure or msg[:200]


COMFY_LOG = ComfyLog()


def fill_random_(module: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """In place: N(0, scale) for weights and biases, 1 for normalisation scales. Fast on the GPU."""
    gen_dev = next(module.parameters()).device
    g = torch.Generator(device=gen_dev).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith(("weight", "scale")):
                p.fill_(1.0)
            else:
                p.normal_(0.0, scale, generator=g)


def unet_config_for(spec: Spec) -> dict:
    unet_config = dict(spec.unet)
    if unet_config.get("image_model") == "hunyuan_video":  # ComfyUI >= 0.3.70 requires the HunyuanVideo 1.5 fields
        from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

        fields = {f.name for f in dataclasses.fields(HunyuanVideoParams)}
        new = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
        unet_config.update({k: v for k, v in new.items() if k in fields})
    return unet_config


def build_model(spec: Spec, dtype: torch.dtype):
    """``--build direct``: a ModelPatcher around the diffusion model at ``spec.unet``, built on the GPU with the calls
    comfy.sd makes (``set_inference_dtype`` -> ``get_model`` -> ``ModelPatcher``) and filled in place."""
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher

    unet_config = unet_config_for(spec)
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if model_config is None:
        raise RuntimeError(f"ComfyUI found no model class for {unet_config}")
    load_device = mm.get_torch_device()
    manual_cast = mm.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({}, "", device=load_device)
    fill_random_(model.diffusion_model)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())
    return patcher, type(model_config).__name__


# ComfyUI's UNETLoader (nodes.py, "Load Diffusion Model"; the same in 0.3.64 and 0.33): its weight_dtype input and
# the model_options it hands to comfy.sd.load_diffusion_model. "bf16" is this benchmark's name for "default" on the
# bf16 checkpoint (the Comfy-Org repackaged *_bf16.safetensors), where ComfyUI keeps bf16 on a bf16-capable GPU.
WEIGHT_DTYPES = ("bf16", "default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")


def unet_loader_options(weight_dtype: str) -> dict:
    """``model_options`` exactly as ``UNETLoader.load_unet`` builds them for ``weight_dtype``."""
    if weight_dtype in ("bf16", "default"):
        return {}
    if weight_dtype == "fp8_e4m3fn":
        return {"dtype": torch.float8_e4m3fn}
    if weight_dtype == "fp8_e4m3fn_fast":
        return {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True}
    if weight_dtype == "fp8_e5m2":
        return {"dtype": torch.float8_e5m2}
    raise ValueError(f"unknown weight dtype {weight_dtype!r}; expected one of {', '.join(WEIGHT_DTYPES)}")


def check_unet_loader(comfy_path: str) -> Optional[str]:
    """A warning when this ComfyUI's UNETLoader does not offer the weight dtypes mapped above (read as text: nodes.py
    is not imported)."""
    try:
        text = pathlib.Path(comfy_path, "nodes.py").read_text(encoding="utf-8")
        block = text[text.index("class UNETLoader"):]
        block = block[:block.index("\nclass ", 1)]
    except (OSError, ValueError):
        return "could not read UNETLoader from this ComfyUI's nodes.py; the weight_dtype mapping is unchecked"
    missing = [w for w in WEIGHT_DTYPES[1:] if f'"{w}"' not in block]
    if missing or '"fp8_optimizations"' not in block:
        return (f"this ComfyUI's UNETLoader differs from the mapping used here (missing {missing or 'fp8_optimizations'});"
                " check unet_loader_options against its nodes.py")
    return None


def checkpoint_layout(spec: Spec) -> Dict[str, torch.Size]:
    """Keys and shapes of the real diffusion-model file: the state dict of the diffusion model ComfyUI builds for
    ``spec.unet``, instantiated on the meta device (no memory)."""
    import comfy.model_detection

    unet_config = unet_config_for(spec)
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if model_config is None:
        raise RuntimeError(f"ComfyUI found no model class for {unet_config}")
    model_config.set_inference_dtype(torch.bfloat16, None)
    model = model_config.get_model({}, "", device=torch.device("meta"))
    return {k: v.shape for k, v in model.diffusion_model.state_dict().items()}


def random_checkpoint(layout: Dict[str, torch.Size], device, seed: int = 0, scale: float = 0.02) -> Dict[str, torch.Tensor]:
    """A bf16 state dict with the checkpoint's keys and shapes. Its tensors are views into one random buffer of twice
    the largest tensor (N(0, scale), a different offset per key) and, for normalisation scales, into a buffer of ones:
    what the loader would read from the file, at the cost of a few hundred MB."""
    is_norm = lambda k: "norm" in k and k.endswith(("weight", "scale"))  # noqa: E731  (as fill_random_)
    biggest = max(shape.numel() for shape in layout.values())
    ones_n = max([shape.numel() for k, shape in layout.items() if is_norm(k)] or [1])
    g = torch.Generator(device=device).manual_seed(seed)
    pool = torch.empty(2 * biggest, dtype=torch.bfloat16, device=device).normal_(0.0, scale, generator=g)
    ones = torch.ones(ones_n, dtype=torch.bfloat16, device=device)
    sd = {}
    for i, (k, shape) in enumerate(layout.items()):
        n = shape.numel()
        if is_norm(k):
            sd[k] = ones[:n].view(shape)
        else:
            off = (i * 1_000_003) % (biggest + 1)  # off + n <= 2 * biggest
            sd[k] = pool[off:off + n].view(shape)
    return sd


def load_model(spec: Spec, weight_dtype: str, device):
    """A ModelPatcher from ComfyUI's own diffusion-model loader, with UNETLoader's model_options for ``weight_dtype``."""
    import comfy.sd

    sd = random_checkpoint(checkpoint_layout(spec), device)
    patcher = comfy.sd.load_diffusion_model_state_dict(sd, model_options=unet_loader_options(weight_dtype))
    del sd  # the loader copied the values into the model's own parameters
    if patcher is None:
        raise RuntimeError(f"ComfyUI's loader did not recognise the {spec.title} checkpoint layout")
    if getattr(patcher, "is_dynamic", lambda: False)():  # pragma: no cover - only when main.py enabled dynamic VRAM
        raise RuntimeError("ComfyUI returned a dynamic-VRAM ModelPatcher; this benchmark keeps the model resident")
    return patcher, type(patcher.model.model_config).__name__


OPS_MEANING = {
    "fp8_ops": "fp8 matmuls (ComfyUI fp8_ops, torch._scaled_mm)",
    "manual_cast": "weights cast to the compute dtype per layer (ComfyUI manual_cast)",
    "disable_weight_init": "native (ComfyUI disable_weight_init)",
}


def describe_weights(patcher) -> Dict[str, str]:
    """What ComfyUI made of the model: weight dtype, compute dtype, the operations class of its Linear layers."""
    model = patcher.model
    lin = next((m for m in model.diffusion_model.modules() if isinstance(m, torch.nn.Linear)), None)
    ops = type(lin).__qualname__.split(".")[0] if lin is not None else "?"
    dtype = str(model.get_dtype()).replace("torch.", "")
    cast = model.manual_cast_dtype
    compute = str(cast).replace("torch.", "") if cast is not None else dtype
    return {"dtype": dtype, "compute": compute, "ops": ops, "ops_meaning": OPS_MEANING.get(ops, ops)}


def conditioning(spec: Spec, device="cpu"):
    g = torch.Generator().manual_seed(0)

    def one():
        c = torch.randn(1, spec.text, 4096, generator=g)
        extra = {}
        if spec.family == "hunyuan":
            extra = {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 6.0}
        return [[c, extra]]

    return one(), one()


# ----------------------------------------------------------------------------------------------- timing
class Timer:
    """CUDA events (or wall clock on the CPU) per category; nothing synchronises until ``collect``."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.enabled = False
        self.events: List[tuple] = []
        self.inside = 0  # > 0 while VORTA's attention runs (its full-head calls reach the dense override)
        self.batches: List[int] = []
        self.branch_impl = "-"
        self.probe: Optional[Dict[str, tuple]] = None  # a dict while dense runs: one attention call per kind

    def now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def add(self, cat: str, start) -> None:
        if self.enabled:
            self.events.append((cat, start, self.now()))

    def elapsed_ms(self, a, b) -> float:
        return float(a.elapsed_time(b)) if self.cuda else (b - a) * 1000.0

    def collect(self) -> Dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out: Dict[str, float] = {}
        for cat, a, b in self.events:
            out[cat] = out.get(cat, 0.0) + self.elapsed_ms(a, b)
        self.events.clear()
        return out


def _lengths(args, kwargs):
    q, k = args[0], args[1]
    if kwargs.get("skip_reshape"):
        return q.shape[2], k.shape[2], q.shape[0]
    return q.shape[1], k.shape[1], q.shape[0]


def _kind(lq, lk, seq_len) -> str:
    if lq != lk:
        return "cross"
    return "self" if lq == seq_len else "other"


def instrument(patcher, timer: Timer, seq_len: int):
    """A clone whose attention calls are timed: ComfyUI's override slot (dense path, and VORTA's full heads and
    non-routed calls, which VORTA chains to), plus an APPLY_MODEL wrapper recording the batch of each call."""
    import comfy.patcher_extension as pe

    m = patcher.clone()

    def override(func, *args, **kwargs):
        if timer.probe is not None and not timer.inside:
            kind = _kind(*_lengths(args, kwargs)[:2], seq_len)
            if kind not in timer.probe:  # shapes and arguments only: replayed by probe_attention after the run
                timer.probe[kind] = (func, tuple(_as_spec(a) for a in args),
                                     {k: _as_spec(v) for k, v in kwargs.items() if k != "transformer_options"}
                                     | ({"transformer_options": None} if "transformer_options" in kwargs else {}))
        if not timer.enabled:
            return func(*args, **kwargs)
        lq, lk, _ = _lengths(args, kwargs)
        cat = "self/full" if timer.inside else _kind(lq, lk, seq_len)
        s = timer.now()
        out = func(*args, **kwargs)
        timer.add(cat, s)
        return out

    def apply_model(executor, x, *args, **kwargs):
        timer.batches.append(int(x.shape[0]))
        return executor(x, *args, **kwargs)

    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "vorta_bench", apply_model)
    return m


def instrument_vorta(patched, timer: Timer, seq_len: int, device) -> None:
    """Time VORTA's attention entry point and its coreset / sliding branches (the full branch reaches the override)."""
    from comfyui_vorta.vorta.kernels import select_branches
    from comfyui_vorta.vorta.comfy.install import find_patch

    holder = find_patch(patched)
    orig = holder.attention

    def attention(func, *args, **kwargs):
        if not timer.enabled:
            return orig(func, *args, **kwargs)
        lq, lk, _ = _lengths(args, kwargs)
        s = timer.now()
        timer.inside += 1
        try:
            out = orig(func, *args, **kwargs)
        finally:
            timer.inside -= 1
        timer.add(_kind(lq, lk, seq_len), s)
        return out

    attention._vorta_override = True
    holder.attention = attention

    def timed(cat, fn):
        def branch(*a, **kw):
            s = timer.now()
            fn(*a, **kw)
            timer.add(cat, s)

        return branch

    base = select_branches(holder.settings.backend, device)
    timer.branch_impl = base.name
    key = str(torch.empty(0, device=device).device)  # the patch keys by q.device: 'cuda:0', not 'cuda'
    holder._branches[key] = dataclasses.replace(base, coreset=timed("self/coreset", base.coreset),
                                                        sliding=timed("self/sliding", base.sliding))
    return holder


@dataclass
class StepTimes:
    totals: List[float] = field(default_factory=list)  # ms per timed step
    cats: List[Dict[str, float]] = field(default_factory=list)
    warmup: List[float] = field(default_factory=list)
    clean: List[float] = field(default_factory=list)  # uninstrumented steps

    @property
    def median(self) -> float:
        return statistics.median(self.totals)

    def attention_ms(self, which=("self", "cross", "other")) -> float:
        return statistics.median([sum(c.get(k, 0.0) for k in which) for c in self.cats])

    def share(self, which=("self", "cross", "other")) -> float:
        return statistics.median([sum(c.get(k, 0.0) for k in which) / t for c, t in zip(self.cats, self.totals)])

    def breakdown(self) -> Dict[str, float]:
        """Median-step breakdown in ms (the timed step closest to the median)."""
        i = min(range(len(self.totals)), key=lambda j: abs(self.totals[j] - self.median))
        c, t = self.cats[i], self.totals[i]
        branches = sum(c.get(k, 0.0) for k in ("self/sliding", "self/coreset", "self/full"))
        out = {
            "self-attention: sliding tile": c.get("self/sliding", 0.0),
            "self-attention: coreset": c.get("self/coreset", 0.0),
            "self-attention: full heads": c.get("self/full", 0.0),
            "self-attention: routing glue (split, assemble)": max(0.0, c.get("self", 0.0) - branches) if branches else 0.0,
            "self-attention (dense)": c.get("self", 0.0) if not branches else 0.0,
            "cross-attention": c.get("cross", 0.0),
            "other attention (text refiner)": c.get("other", 0.0),
        }
        out["rest of the model (linear, norms, rope, modulation, CFG)"] = t - sum(
            c.get(k, 0.0) for k in ("self", "cross", "other"))
        out["step"] = t
        return out


# --------------------------------------------------------------------------------------------- the bench
@dataclass
class Row:
    name: str
    heads: List[float]  # shares full, coreset, sliding
    times: Optional[StepTimes]
    peak: float = float("nan")  # bytes
    median: float = float("nan")
    share: float = float("nan")
    self_share: float = float("nan")
    note: str = ""
    batches: str = ""
    config: str = ""  # the configuration without the backend suffix
    backend: str = ""  # VORTA's backend input ('' for dense)
    kernels: str = ""  # the branch implementation that ran
    dense_like: bool = False


class NodeRejected(Exception):
    """Apply VORTA refused the inputs (e.g. an unknown or unavailable backend)."""


class Bench:
    def __init__(self, spec: Spec, args, cuda: bool, deadline: float, weight_dtype: str = "bf16",
                 backends: Optional[List[str]] = None):
        self.spec, self.args, self.cuda, self.deadline = spec, args, cuda, deadline
        self.weight_dtype = weight_dtype
        self.backends = list(backends or [DEFAULT_BACKEND])
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = torch.bfloat16 if cuda else torch.float32  # --build direct
        self.weights_info: Dict[str, str] = {}
        self.dense_attention: Dict[str, Tuple[str, str]] = {}  # kind -> (short, long), from probe_attention
        self.backend_errors: Dict[str, str] = {}
        self.fp8_failures = 0
        self.res = parse_res(args.res if not args.tiny else None, spec)
        self.frames = args.frames if (args.frames and not args.tiny) else spec.frames
        self.shape = latent_shape(spec, self.res, self.frames)
        self.grid = grid_from_latent(self.shape[2:], (1, 2, 2))
        self.text_len = spec.text if spec.family == "hunyuan" else 0
        self.seq_len = self.grid.numel + self.text_len
        self.timer = Timer(cuda)
        self.rows: List[Row] = []
        self.notes: List[str] = []
        self.breakdowns: Dict[str, Dict[str, float]] = {}
        self.allowed: Dict[int, List[int]] = {}
        self.branch_impl = "-"

    # ..................................................................................... set-up
    def setup(self):
        import comfy.samplers

        t0 = time.perf_counter()
        if self.args.build == "direct":
            self.base, self.config_class = build_model(self.spec, self.dtype)
        else:
            self.base, self.config_class = load_model(self.spec, self.weight_dtype, self.device)
        if self.cuda:
            torch.cuda.synchronize()
        self.build_s = time.perf_counter() - t0
        self.weights_info = describe_weights(self.base)
        w = self.weights_info
        if self.weight_dtype == "fp8_e4m3fn_fast" and w["ops"] != "fp8_ops":
            msg = (f"fp8_e4m3fn_fast: ComfyUI found no fp8 compute on {self.device.type} (supports_fp8_compute is "
                   f"False), so it runs this like fp8_e4m3fn: {w['ops_meaning']}")
            self.notes.append(msg)
            print(f"  note: {msg}", flush=True)
        if self.weight_dtype == "bf16" and w["dtype"] != "bfloat16":
            self.notes.append(f"weights `bf16`: ComfyUI chose {w['dtype']} on {self.device.type} (its own choice for "
                              "a bf16 checkpoint with weight_dtype default)")
        self.weights = torch.cuda.memory_allocated() if self.cuda else sum(
            p.numel() * p.element_size() for p in self.base.model.parameters())
        dm = self.base.model.diffusion_model
        from comfyui_vorta.vorta.comfy.adapters import detect

        self.adapter = detect(dm)
        self.positive, self.negative = conditioning(self.spec)
        ms = self.base.get_model_object("model_sampling")
        self.sigmas = comfy.samplers.calculate_sigmas(ms, "simple", SCHEDULE_STEPS).cpu()
        self.mid = SCHEDULE_STEPS // 2
        if self.args.tiny:
            self.node_inputs = dict(preset="custom", **TINY_CFG)
            self.config = VortaConfig(tile=(1, 2, 2), bucket=(1, 2, 2))
        else:
            self.node_inputs = dict(preset="auto")
            self.config = preset_for(self.spec.family, self.grid.shape, self.adapter.dim).config

    def patch(self, mode: str, bundle=None, backend: Optional[str] = None):
        """Apply VORTA exactly as a workflow does: the node's execute with the node's defaults (``backend`` passed
        unchecked to its backend input). NodeRejected carries the node's own error."""
        inputs = dict(mode=mode, **self.node_inputs)
        if backend is not None:
            inputs["backend"] = backend
        try:
            return self._patch(inputs, bundle)
        except (ValueError, RuntimeError) as e:
            raise NodeRejected(f"{type(e).__name__}: {e}") from e

    def _patch(self, inputs: dict, bundle):
        if not self.args.no_node:
            from comfyui_vorta.nodes.apply import VortaApply
            from comfyui_vorta.vorta.comfy.setting_specs import APPLY

            apply_names = {s.name for s in APPLY}
            settings = {k: v for k, v in inputs.items() if k not in apply_names}
            defaults = {i.id: i.default for i in VortaApply.define_schema().inputs
                        if getattr(i, "default", None) is not None}
            own = {k: v for k, v in inputs.items() if k in apply_names}
            return VortaApply.execute(model=self.instrumented, router=bundle, settings=settings,
                                      **{**defaults, **own}).result[0]
        from comfyui_vorta.vorta.comfy.options import build_settings
        from comfyui_vorta.vorta.comfy.install import apply_vorta

        return apply_vorta(self.instrumented, build_settings(**inputs), bundle)

    def mix_bundle(self):
        """A router file whose decisions are constant: exactly 50 % sliding / 48 % coreset / 2 % full over all
        (layer, head) pairs, shuffled with a fixed seed."""
        from comfyui_vorta.vorta.comfy.plan import RouterBundle

        a = self.adapter
        n = a.num_layers * a.heads
        n_full = max(1, round(MIX["full"] * n))
        n_core = max(1, round(MIX["coreset"] * n))
        n_slide = n - n_full - n_core
        dec = torch.tensor([FULL] * n_full + [CORESET] * n_core + [SLIDING] * n_slide)
        dec = dec[torch.randperm(n, generator=torch.Generator().manual_seed(0))].view(a.num_layers, a.heads)
        bias = torch.nn.functional.one_hot(dec, 3).float().mul(16.0).view(a.num_layers, a.heads * 3)
        weight = torch.zeros(a.num_layers, a.heads * 3, a.dim)
        names = (official_layer_names("wan", a.num_layers) if a.family == "wan"
                 else official_layer_names("hunyuan", double=a.double, single=a.single))
        r = RouterSet(a.family, names, weight.to(torch.bfloat16), bias.to(torch.bfloat16),
                      {"model": "benchmark: fixed 50/48/2 mix"})
        return RouterBundle(r, self.config, "fixed-mix"), dec

    # ..................................................................................... one run
    def sample(self, model, plan: List[Tuple[int, int, int, int]], clean_steps: int = 0) -> Dict[int, StepTimes]:
        """Run ComfyUI's sampler once; ``plan`` = [(sigma index, warm-up steps, min timed, max timed)]. Warm-up
        and timed steps walk through consecutive sigmas from the index (wrapping inside the schedule) so that the
        once-per-timestep routing work runs in every step, as in a real run; ``allowed`` limits them to the steps
        with the same decisions."""
        import comfy.samplers

        timer, budget = self.timer, self.spec.budget_s
        results: Dict[int, StepTimes] = {}

        def step(model_k, x, sigma, extra_args):
            s = timer.now()
            model_k(x, sigma, **extra_args)
            e = timer.now()
            if self.cuda:
                torch.cuda.synchronize()
            return timer.elapsed_ms(s, e)

        def sampler_fn(model_k, noise, sigmas, extra_args=None, callback=None, disable=None):
            extra_args = extra_args or {}
            x = noise
            s_in = x.new_ones([x.shape[0]])
            for idx, warm, lo, hi in plan:
                st = results.setdefault(idx, StepTimes())
                steps = list(self.allowed.get(idx, range(len(sigmas) - 1)))
                start = steps.index(idx)
                n = [0]

                def sig():
                    i = steps[(start + n[0]) % len(steps)]
                    n[0] += 1
                    return sigmas[i] * s_in

                timer.enabled = False
                for _ in range(warm):
                    st.warmup.append(step(model_k, x, sig(), extra_args))
                for _ in range(clean_steps):
                    st.clean.append(step(model_k, x, sig(), extra_args))
                t0 = time.perf_counter()
                timer.enabled = True
                while len(st.totals) < hi and (len(st.totals) < lo or (
                        time.perf_counter() - t0 < budget and
                        time.perf_counter() + st.totals[-1] / 1000.0 < self.deadline)):
                    timer.batches.clear()
                    timer.events.clear()
                    st.totals.append(step(model_k, x, sig(), extra_args))
                    st.cats.append(timer.collect())
                timer.enabled = False
            return x

        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(self.positive, self.negative)
        guider.set_cfg(self.spec.cfg)
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(0))
        latent = torch.zeros(self.shape)
        with torch.inference_mode(), sdpa_priority():
            guider.sample(noise, latent, comfy.samplers.KSAMPLER(sampler_fn), self.sigmas, disable_pbar=True, seed=0)
        return results

    def prior_ms(self) -> float:
        """A rough dense step before anything was timed: attention at 350 TFLOP/s, the rest at 500 (batch 2)."""
        if not self.cuda:
            return 0.0
        d = self.adapter.heads * 128
        attn = 4.0 * self.seq_len ** 2 * d * self.adapter.num_layers * 2
        lin = 2.0 * sum(p.numel() for p in self.base.model.parameters()) * self.seq_len * 2
        return (attn / 350e12 + lin / 500e12) * 1000.0

    def estimate_ms(self, dense_like: bool) -> float:
        ref = [r for r in self.rows if r.times is not None and r.dense_like == dense_like]
        if not ref and not dense_like:
            ref = [r for r in self.rows if r.times is not None]
            return 0.5 * max(r.median for r in ref) if ref else 0.5 * self.prior_ms()
        if ref:
            return max(r.median for r in ref)
        # nothing timed yet of this kind: the dense estimate, halved for sparse configurations
        return self.prior_ms() * (1.0 if dense_like else 0.5)

    def fits(self, name: str, steps: int, dense_like: bool) -> bool:
        need = steps * self.estimate_ms(dense_like) / 1000.0
        if time.perf_counter() + need > self.deadline:
            self.notes.append(f"`{name}` skipped: about {need:.0f} s of steps would pass the time limit")
            print(f"  skip {name}: about {need:.0f} s would pass the deadline", flush=True)
            return False
        return True

    def run_config(self, name: str, model, heads: List[float], idx: int, dense_like: bool, clean: int = 0,
                   holder=None, config: str = "", backend: str = "") -> Optional[Row]:
        warm = 1 if (not dense_like or self.spec.full_warmup) else 0
        lo, hi = (self.args.repeats, self.args.repeats) if self.args.tiny else (1, self.args.max_repeats)
        if not self.fits(name, warm + lo + clean, dense_like):
            return None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        st = self.sample(model, [(idx, warm, lo, hi)], clean_steps=clean)[idx]
        row = Row(name, heads, st, median=st.median, share=st.share(), self_share=st.share(("self",)),
                  batches="+".join(map(str, self.timer.batches)), config=config or name, backend=backend,
                  kernels=self.timer.branch_impl if holder is not None else "", dense_like=dense_like)
        row.peak = torch.cuda.max_memory_allocated() if self.cuda else float("nan")
        if holder is not None:
            fb = holder.stats.fallbacks
            if fb:
                row.note = "dense fallbacks: " + "; ".join(f"{k} (x{v})" for k, v in fb.items())
            print(f"  {holder.last_summary}", flush=True)
        print(f"  {name}: steps ms {', '.join(f'{t:.0f}' for t in st.totals)} (warm-up "
              f"{', '.join(f'{t:.0f}' for t in st.warmup) or '-'}{'; uninstrumented ' + ', '.join(f'{t:.0f}' for t in st.clean) if st.clean else ''}); "
              f"attention {100 * row.share:.0f}%, batch per model call {row.batches}, peak "
              f"{row.peak / 2**30:.2f} GiB, {time.perf_counter() - t0:.0f} s", flush=True)
        self.rows.append(row)
        if self.args.profile and self.cuda:
            self.profile(model, idx, name)
        return row

    def profile(self, model, idx: int, name: str) -> None:
        """One more step under torch.profiler: the CUDA kernels it ran, by total time (``--profile``)."""
        from profile_routed import kernel_table

        table = kernel_table(lambda: self.sample(model, [(idx, 0, 1, 1)]), rows=12, warm=False)
        print(f"  profile of one `{name}` step:\n{table}", flush=True)

    def run(self) -> None:
        from comfyui_vorta.vorta.comfy.preview import preview_table

        fp8_before = COMFY_LOG.fp8_failures
        self.setup()
        a, w = self.adapter, self.weights_info
        print(f"== {self.spec.title}: {self.config_class}, {a.num_layers} layers x {a.heads} heads, latent "
              f"{tuple(self.shape)} -> grid {self.grid.shape} ({self.grid.numel} tokens + {self.text_len} text), "
              f"weights {self.weights / 2**30:.1f} GiB built in {self.build_s:.1f} s; weight_dtype "
              f"{self.weight_dtype}: {w['dtype']} weights, compute {w['compute']}, linear layers "
              f"{w['ops_meaning']}; VORTA backend(s) {', '.join(self.backends)}", flush=True)
        try:
            self._run(preview_table)
        finally:
            self.fp8_failures = COMFY_LOG.fp8_failures - fp8_before
            if self.fp8_failures:
                self.notes.append(f"**ComfyUI's fp8 matmul failed {self.fp8_failures} times and fell back to the "
                                  f"manual cast** (first: {COMFY_LOG.first_fp8_failure})")

    def _run(self, preview_table) -> None:
        self.instrumented = instrument(self.base, self.timer, self.seq_len)
        if self.cuda and not self.spec.full_warmup:
            self.small_warmup()
        only = set(self.args.configs.split(",")) if self.args.configs else None

        def want(n):
            return only is None or n in only

        if want("dense"):
            self.timer.probe = {}
            try:
                self.run_config("dense", self.instrumented, [1.0, 0.0, 0.0], self.mid, True)
            finally:
                calls, self.timer.probe = self.timer.probe, None
            if calls:
                self.dense_attention = probe_attention(calls, self.cuda)
                print("  dense attention ran: " + "; ".join(f"{k}: {v[1]}" for k, v in self.dense_attention.items()),
                      flush=True)
                self_attn = self.dense_attention.get("self", ("?", ""))[0]
                if self.cuda and self.args.dense_sdpa == "cudnn" and not self_attn.startswith("cuDNN"):
                    msg = f"**dense self-attention did not run on cuDNN but on {self_attn}** (--dense-sdpa cudnn)"
                    print(f"  WARNING: {msg}", flush=True)
                    self.notes.append(msg)
        for backend in self.backends:
            try:
                self.run_vorta(backend, want, preview_table)
            except NodeRejected as e:
                msg = f"backend `{backend}`: Apply VORTA rejected it: {e}"
                print(f"  {msg}", flush=True)
                self.notes.append(msg)
                self.backend_errors[backend] = f"rejected by Apply VORTA: {e}"
            except Exception as e:  # report and go on with the next backend
                import traceback

                traceback.print_exc()
                msg = f"stopped by {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
                self.notes.append(f"backend `{backend}` {msg}")
                self.backend_errors[backend] = msg
        dense = next((r for r in self.rows if r.name == "dense"), None)
        if dense is not None and dense.times is not None:
            self.breakdowns = {"dense": dense.times.breakdown(), **self.breakdowns}

    def run_vorta(self, backend: str, want, preview_table) -> None:
        """The VORTA configurations with one backend; row names carry it when several backends share the model."""
        suffix = f" [{backend}]" if len(self.backends) > 1 else ""
        forced: Dict[int, Row] = {}
        if want("mix"):
            bundle, dec = self.mix_bundle()
            m = self.patch("router", bundle, backend)
            holder = instrument_vorta(m, self.timer, self.seq_len, self.device)
            shares = torch.bincount(dec.flatten(), minlength=3).double() / dec.numel()
            row = self.run_config("mix 50/48/2" + suffix, m, shares.tolist(), self.mid, False,
                                  clean=int(self.spec.clean_step), holder=holder, config="mix 50/48/2",
                                  backend=backend)
            if row is not None:
                self.breakdowns[row.name] = row.times.breakdown()
            del m, holder
        for mode, b in (("sliding", SLIDING), ("coreset", CORESET), ("schedule", None), ("full", FULL)):
            if not want(mode):
                continue
            if mode == "schedule":
                self.run_schedule(forced, preview_table, backend, suffix)
                continue
            m = self.patch(mode, None, backend)
            holder = instrument_vorta(m, self.timer, self.seq_len, self.device)
            heads = [0.0, 0.0, 0.0]
            heads[b] = 1.0
            row = self.run_config(f"vorta {mode}" + suffix, m, heads, self.mid, mode == "full", holder=holder,
                                  config=f"vorta {mode}", backend=backend)
            if row is not None:
                forced[b] = row
            del m, holder

    def small_warmup(self) -> None:
        """One dense step at a reduced latent (CUDA context, cuBLAS, allocator) before the first timed step."""
        full_shape = self.shape
        half = lambda n: max(2, n // 4 * 2)  # noqa: E731  (even: the 2x2 patch embedding needs it)
        self.shape = full_shape[:2] + (min(full_shape[2], 5), half(full_shape[3]), half(full_shape[4]))
        small = self.shape
        t0 = time.perf_counter()
        try:
            self.sample(self.base, [(self.mid, 1, 0, 0)])
        finally:
            self.shape = full_shape
        print(f"  warm-up at latent {small}: "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

    def run_schedule(self, forced: Dict[int, Row], preview_table, backend: str, suffix: str = "") -> None:
        m = self.patch("schedule", None, backend)
        table, _ = preview_table(m, self.sigmas)  # (steps, layers, heads), the node's own rule
        groups: Dict[bytes, List[int]] = {}
        for i in range(table.shape[0]):
            groups.setdefault(table[i].numpy().tobytes(), []).append(i)
        shares = (torch.bincount(table.flatten(), minlength=3).double() / table.numel()).tolist()
        parts, notes, peaks = [], [], []
        holder = instrument_vorta(m, self.timer, self.seq_len, self.device)
        for steps in groups.values():
            t = table[steps[0]]
            uniform = int(t.flatten()[0]) if bool((t == t.flatten()[0]).all()) else None
            what = BRANCHES[uniform] if uniform is not None else "mixed"
            if uniform is not None and uniform in forced:
                r = forced[uniform]
                parts.append((len(steps), r.median, r.times.attention_ms(), r.times.attention_ms(("self",))))
                peaks.append(r.peak)
                notes.append(f"{len(steps)} steps all-{what} (time of `vorta {what}` reused: same decisions)")
                continue
            idx = steps[len(steps) // 2]
            self.allowed[idx] = steps
            if not self.fits(f"schedule{suffix} state {what}", 2, uniform == FULL):
                return
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            st = self.sample(m, [(idx, 1, 1, self.args.max_repeats)])[idx]
            self.allowed.pop(idx, None)
            peaks.append(torch.cuda.max_memory_allocated() if self.cuda else float("nan"))
            parts.append((len(steps), st.median, st.attention_ms(), st.attention_ms(("self",))))
            notes.append(f"{len(steps)} steps {what} (timed at step {idx}: {st.median:.0f} ms)")
        n = sum(p[0] for p in parts)
        med = sum(p[0] * p[1] for p in parts) / n
        row = Row("schedule (50 steps)" + suffix, shares, None, peak=max(peaks), median=med,
                  share=sum(p[0] * p[2] for p in parts) / n / med, self_share=sum(p[0] * p[3] for p in parts) / n / med,
                  note="; ".join(notes), config="schedule (50 steps)", backend=backend, kernels=self.timer.branch_impl)
        print(f"  schedule{suffix}: {row.note}; weighted step {med:.0f} ms", flush=True)
        self.rows.append(row)

    def close(self) -> None:
        import comfy.model_management as mm

        base = getattr(self, "base", None)
        self.base = self.instrumented = self.adapter = None
        mm.unload_all_models()
        if base is not None:  # the weights go even if a reference to the model survives somewhere (one model at a time)
            try:
                base.model.to(torch.device("meta"))
            except Exception as e:  # pragma: no cover
                print(f"  note: could not drop the weights explicitly ({type(e).__name__}: {e})", flush=True)
        del base
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            left = torch.cuda.memory_allocated()
            if left > 2**30:
                print(f"  warning: {left / 2**30:.1f} GiB still allocated after freeing {self.spec.name} "
                      f"({self.weight_dtype})", flush=True)

    # ..................................................................................... report
    def weights_label(self) -> str:
        w = self.weights_info
        if not w:
            return f"weights {self.weight_dtype}"
        how = "built directly" if self.args.build == "direct" else f"UNETLoader weight_dtype `{self.weight_dtype}`"
        return f"weights {w['dtype']} ({how}; compute {w['compute']}, linear layers: {w['ops_meaning']})"

    def table(self) -> str:
        s = self.spec
        if not hasattr(self, "config"):  # the model could not be built
            return "\n".join([f"### {s.title}, {self.weights_label()}: not run", ""] + [f"* {n}" for n in self.notes])
        dense = next((r for r in self.rows if r.name == "dense"), None)
        kernels = sorted({r.kernels for r in self.rows if r.kernels}) or [self.timer.branch_impl]
        title = (f"### {s.title} {self.res[1]}x{self.res[0]}, {self.frames} frames: latent {tuple(self.shape[1:])}, "
                 f"grid {'x'.join(map(str, self.grid.shape))} = {self.grid.numel} video tokens"
                 f"{f' + {self.text_len} text' if self.text_len else ''}, "
                 f"sparse settings tile {'x'.join(map(str, self.config.tile))} window "
                 f"{'x'.join(map(str, self.config.window))} bucket {'x'.join(map(str, self.config.bucket))} "
                 f"ratio {self.config.ratio}, CFG {self.spec.cfg}, sparse kernels: {', '.join(kernels)}, "
                 f"{self.weights_label()}, VORTA backend input: {', '.join(self.backends)}")
        lines = [title, "",
                 "| configuration | heads full / coreset / sliding | step (median) | steps timed | speed-up vs dense | "
                 "attention share (self-attn) | peak memory | peak vs dense | batch per model call |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            sp = f"{dense.median / r.median:.2f}x" if dense is not None else "-"
            pk = f"{r.peak / 2**30:.2f} GiB" if r.peak == r.peak else "-"
            pv = f"{100 * (r.peak / dense.peak - 1):+.1f}%" if (dense is not None and r.peak == r.peak) else "-"
            n = (f"{len(r.times.totals)} ({min(r.times.totals) / 1000:.2f}-{max(r.times.totals) / 1000:.2f} s)"
                 if r.times is not None else "weighted")
            lines.append(f"| {r.name} | {' / '.join(f'{100 * h:.0f}%' for h in r.heads)} | {r.median / 1000:.3f} s | "
                         f"{n} | {sp} | {100 * r.share:.0f}% ({100 * r.self_share:.0f}%) | {pk} | {pv} | "
                         f"{r.batches or '-'} |")
        for r in self.rows:
            if r.note:
                lines.append(f"\n* `{r.name}`: {r.note}")
        if self.dense_attention:
            lines.append("\n* dense attention ran (replayed call, PyTorch profiler): "
                         + "; ".join(f"{k}: {v[1]}" for k, v in self.dense_attention.items()))
        if self.cuda and "torch" in kernels:
            lines.append("\n* **WARNING: the sparse branches ran on the PyTorch reference, not the Triton kernels**")
        for n in self.notes:
            lines.append(f"\n* {n}")
        for mix in (r for r in self.rows if r.name.startswith("mix") and r.times is not None and r.times.clean):
            what = "`mix`" if mix.name == mix.config else f"`{mix.name}`"
            lines.append(f"\n* {what} without the timing events: "
                         f"{', '.join(f'{t / 1000:.3f} s' for t in mix.times.clean)} "
                         f"per step (instrumented median {mix.median / 1000:.3f} s)")
        if self.breakdowns:
            names = list(self.breakdowns)
            lines += ["", f"Breakdown of one step (the timed step nearest the median), ms:", "",
                      "| component | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            keys = list(next(iter(self.breakdowns.values())))
            for k in keys:
                cells = []
                for nme in names:
                    b = self.breakdowns[nme]
                    cells.append(f"{b[k]:.0f} ({100 * b[k] / b['step']:.0f}%)" if k != "step" else f"{b[k]:.0f}")
                if k == "step" or any(self.breakdowns[nme][k] > 0 for nme in names):
                    lines.append(f"| {k} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _version(module: str) -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version(module)
    except Exception:
        return "-"


def header(args, cuda: bool, stacks: List[Tuple[str, str]], sdpa: str, argv: List[str]) -> str:
    import shlex

    import comfy.ldm.modules.attention as attn

    try:
        import comfyui_version

        cv = comfyui_version.__version__
    except Exception:  # pragma: no cover
        cv = "?"
    dev = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})"
    tri = ""
    if cuda:
        try:
            import triton

            tri = f" | triton {triton.__version__}"
        except Exception:  # pragma: no cover
            tri = " | triton missing"
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        tri += f" | cuDNN {cudnn}" if cudnn else " | cuDNN missing"
    ck = _version("comfy-kitchen")
    ck = f" | comfy-kitchen {ck}" if ck != "-" else ""
    wds = sorted({wd for wd, _ in stacks}, key=[wd for wd, _ in stacks].index)
    weights = ("bf16" if cuda else "fp32 (tiny CPU smoke run)") if args.build == "direct" else (
        "UNETLoader weight_dtype " + ", ".join(wds) + ("" if cuda else " (tiny CPU smoke run)"))
    stack_txt = ""
    if args.stacks or args.weight_dtype or args.backend:
        stack_txt = " | stacks (weights:VORTA backend): " + ", ".join(f"{wd}:{b}" for wd, b in stacks)
    cmd = shlex.join(["python", "bench/e2e.py"] + list(argv))
    outer = os.environ.get("E2E_COMMAND")
    return (f"{datetime.date.today()} | {dev} | torch {torch.__version__}{tri} | ComfyUI {cv}{ck} | python "
            f"{platform.python_version()} | {weights}{stack_txt} | dense attention: "
            f"ComfyUI `{attn.optimized_attention.__name__}`, {sdpa} | random weights, real architectures | step = one "
            f"sampler call (cond + uncond in one call when ComfyUI batches them; CFG scale per table)\n\n"
            f"Command: `{cmd}`" + (f" (from `{outer}`)" if outer else ""))


def stacks_table(benches: List["Bench"]) -> str:
    """Per model: every stack (weights x VORTA backend) and configuration against the dense step with the same
    weights and against the bf16 dense step."""
    def dense_of(b):
        return next((r for r in b.rows if r.name == "dense" and r.times is not None), None)

    ref = next((b for b in benches if b.weights_info.get("dtype") == "bfloat16" and dense_of(b)), None) or next(
        (b for b in benches if b.weight_dtype in ("bf16", "default") and dense_of(b)), None)
    ref_dense = dense_of(ref) if ref is not None else None
    ref_attn = ref.dense_attention.get("self", ("", ""))[0] if ref is not None else ""
    b0 = benches[0]
    lines = [f"### Stacks: {b0.spec.title} {b0.res[1]}x{b0.res[0]}, {b0.frames} frames, CFG {b0.spec.cfg}", "",
             f"| weights (UNETLoader weight_dtype) | attention | configuration | step (median) | vs dense, same weights | "
             f"vs bf16 dense{f' ({ref_attn})' if ref_attn else ''} | peak memory |",
             "|---|---|---|---|---|---|---|"]
    for b in benches:
        w = b.weights_info
        label = f"{b.weight_dtype}: {w['dtype']}, {w['ops']}" if w else b.weight_dtype
        dense = dense_of(b)
        if not b.rows:
            lines.append(f"| {label} | - | not run: {'; '.join(b.notes)[:200] or '-'} | - | - | - | - |")
        for r in b.rows:
            if r.name == "dense":
                attn = "dense: " + b.dense_attention.get("self", ("?", ""))[0]
            else:
                attn = f"VORTA `{r.backend}` ({r.kernels or '?'})"
            own = f"{dense.median / r.median:.2f}x" if dense is not None else "-"
            vs_ref = f"**{ref_dense.median / r.median:.2f}x**" if ref_dense is not None else "-"
            pk = f"{r.peak / 2**30:.2f} GiB" if r.peak == r.peak else "-"
            lines.append(f"| {label} | {attn} | {r.config or r.name} | {r.median / 1000:.3f} s | {own} | {vs_ref} | "
                         f"{pk} |")
        for backend, err in b.backend_errors.items():
            lines.append(f"| {label} | VORTA `{backend}` | not run: {err[:200]} | - | - | - | - |")
    if ref_dense is None:
        lines.append("\n* no bf16 dense row in this run (add a `bf16:...` stack): the bf16 column is empty")
    lines.append("\n* step = one sampler call (cond + uncond); `vs ...` = that dense step time / this step time")
    return "\n".join(lines)


METHOD = """Method: `python bench/e2e.py` (see its docstring). Each configuration runs through
ComfyUI's `CFGGuider.sample`; a step is one call of the sampler's model (cond + uncond, batched by ComfyUI when its
memory rule allows; the batch used is listed). Sparse configurations get one untimed warm-up step (Triton compile);
dense ones on the large models only a reduced-size warm-up step first (CUDA context, cuBLAS), to save device time;
timed steps repeat until the configuration's time budget is spent. Attention time = CUDA events around every
attention call (ComfyUI's override slot, VORTA's entry point and branches), no synchronisation inside a step.
`mix 50/48/2` = a fixed, seeded random assignment per (layer, head), delivered through router mode with a constant
router. `schedule` = the node's training-free mode over a 50-step `simple` schedule, step times weighted by the
number of steps with each decision table. Peak memory includes the weights. Weights: ComfyUI's diffusion-model loader
(`comfy.sd.load_diffusion_model_state_dict`) with the model_options of Load Diffusion Model's `weight_dtype` on a
random bf16 checkpoint of the real layout (`bf16` = `default`); one model on the GPU at a time, each weight dtype's
`dense` row measured with its own model. Dense attention: ComfyUI's `attention_pytorch`, SDPA priority as in the
header; the SDPA operator that ran is read back by replaying one call per kind under the profiler."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/e2e.py")
    ap.add_argument("--model", default="wan14b",
                    help=f"comma-separated, run in order: {', '.join(MODELS)} (with --tiny: {', '.join(TINY)})")
    ap.add_argument("--res", help="480p, 720p or HxW (default: the model's own)")
    ap.add_argument("--frames", type=int, help="video frames (default: the model's own)")
    ap.add_argument("--steps", type=int, dest="max_repeats", default=5, help="most timed steps per configuration")
    ap.add_argument("--repeats", type=int, default=2, help="timed steps per configuration with --tiny")
    ap.add_argument("--configs", help="subset: dense,mix,sliding,coreset,full,schedule")
    ap.add_argument("--budget", type=float, help="seconds of timed steps per configuration (default per model)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="seconds for the whole run; configurations that would pass it are skipped (0: none)")
    ap.add_argument("--cfg", type=float, help="CFG scale (default 5.0; 1.0 skips the uncond pass, as HunyuanVideo "
                                               "workflows with embedded guidance do)")
    ap.add_argument("--tiny", action="store_true", help="tiny dimensions on the CPU (smoke test)")
    ap.add_argument("--no-node", action="store_true", help="patch with build_settings + apply_vorta, not the node")
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernels of one extra step per configuration")
    ap.add_argument("--md", help="write the tables with a header to this markdown file (rewritten after each model)")
    ap.add_argument("--weight-dtype", choices=WEIGHT_DTYPES,
                    help="Load Diffusion Model's weight_dtype: default, fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2; bf16 "
                         "(the default) = 'default' on the bf16 checkpoint")
    ap.add_argument("--backend", help="Apply VORTA's backend input (default: the node's default); the node validates it")
    ap.add_argument("--stacks", help="comma-separated weight_dtype[:backend] stacks run side by side, e.g. "
                                     "bf16:triton,fp8_e4m3fn_fast:triton; dense runs once per weight dtype")
    ap.add_argument("--dense-sdpa", choices=("cudnn", "comfy"), default="cudnn",
                    help="cudnn (default): ComfyUI's attention_pytorch (--use-pytorch-cross-attention) with the SDPA "
                         "priority cuDNN first; comfy: ComfyUI's own attention choice and SDPA order")
    ap.add_argument("--build", choices=("loader", "direct"), default="loader",
                    help="loader: ComfyUI's diffusion-model loader on a random checkpoint (default); direct: the "
                         "earlier in-place builder (bf16 only)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    try:
        stacks = parse_stacks(args)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 2
    rejected = check_backends(sorted({b for _, b in stacks}))
    if rejected:
        print(rejected, file=sys.stderr)
        return 2
    start = time.perf_counter()
    deadline = start + args.time_limit if args.time_limit > 0 else float("inf")
    cuda = not args.tiny
    if cuda and not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --tiny for the CPU smoke run)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    root = logging.getLogger()  # ComfyUI's INFO lines reach COMFY_LOG only; the console keeps WARNING and above
    for h in root.handlers:
        if h.level == logging.NOTSET:
            h.setLevel(logging.WARNING)
    root.addHandler(COMFY_LOG)
    root.setLevel(min(root.level, logging.INFO))
    import_comfy(cpu=not cuda, pytorch_attention=cuda and args.dense_sdpa == "cudnn")
    sdpa = set_dense_sdpa(args.dense_sdpa)
    registry = TINY if args.tiny else MODELS
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    bad = [n for n in names if n not in registry]
    if bad:
        print(f"unknown model(s) {bad}; expected {list(registry)}", file=sys.stderr)
        return 2
    head = header(args, cuda, stacks, sdpa, argv)
    loader_note = check_unet_loader(os.environ["COMFYUI_PATH"]) if args.build == "loader" else None
    if loader_note:
        head += f"\n\n**{loader_note}**"
    print(head, flush=True)
    tables: List[str] = []
    groups: Dict[str, List[str]] = {}
    for wd, b in stacks:
        groups.setdefault(wd, [])
        if b not in groups[wd]:
            groups[wd].append(b)
    summary = bool(args.stacks or args.weight_dtype or args.backend)

    def write():
        if args.md:
            with open(args.md, "w") as f:
                f.write(head + "\n\n" + METHOD + "\n\n" + "\n\n".join(tables) + "\n")

    for name in names:
        spec = registry[name]
        if args.budget is not None:
            spec = dataclasses.replace(spec, budget_s=args.budget)
        if args.cfg is not None:
            spec = dataclasses.replace(spec, cfg=args.cfg)
        benches: List[Bench] = []
        for wd, backends in groups.items():  # one model in memory at a time: each is freed before the next loads
            if time.perf_counter() > deadline:
                tables.append(f"### {spec.title}, weights {wd}: skipped (time limit)")
                write()
                continue
            b = Bench(spec, args, cuda, deadline, wd, backends)
            try:
                b.run()
            except Exception as e:  # report and go on with the next weight dtype / model
                import traceback

                traceback.print_exc()
                b.notes.append(f"stopped by {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}")
            finally:
                tables.append(b.table())
                b.close()
                benches.append(b)
                write()
            print(f"  [{time.perf_counter() - start:.0f} s so far]", flush=True)
        if summary and benches:
            tables.append(stacks_table(benches))
            write()
    print("\n" + head + "\n\n" + "\n\n".join(tables), flush=True)
    return 0


def parse_stacks(args) -> List[Tuple[str, str]]:
    """[(weight dtype, backend)] from --stacks, else the one stack --weight-dtype / --backend name."""
    wd0, b0 = args.weight_dtype or "bf16", args.backend or DEFAULT_BACKEND
    if not args.stacks:
        out = [(wd0, b0)]
    else:
        out = []
        for item in (x.strip() for x in args.stacks.split(",")):
            if not item:
                continue
            wd, _, b = item.partition(":")
            out.append((wd.strip() or wd0, b.strip() or b0))
    for wd, _ in out:
        if wd not in WEIGHT_DTYPES:
            raise ValueError(f"unknown weight dtype {wd!r} in --stacks; expected one of {', '.join(WEIGHT_DTYPES)}")
        if args.build == "direct" and wd != "bf16":
            raise ValueError(f"--build direct builds bf16 weights only (asked for {wd}); use the loader")
    if not out:
        raise ValueError("--stacks names no stack")
    return list(dict.fromkeys(out))


def check_backends(backends: List[str]) -> Optional[str]:
    """Apply VORTA's own check of its backend input (the node runs build_settings first), before any model is built."""
    from comfyui_vorta.vorta.comfy.options import build_settings

    for b in backends:
        try:
            build_settings(backend=b)
        except ValueError as e:
            return f"Apply VORTA rejects backend {b!r}: {e}"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
