"""One adapter per model family: what to tag, where the time MLP is, and where the tokens of a model call are.

Everything about token positions is read from the running model and the arguments of its ``_forward`` (bound
by name, so a new positional argument in a later ComfyUI cannot shift them), never assumed from a version.
ComfyUI classes are imported lazily so that this module (and the package) imports without ComfyUI.
"""
from __future__ import annotations

import inspect
from functools import lru_cache
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..geometry import TokenGrid, ceil_div, grid_from_latent


@dataclass(frozen=True)
class Target:
    """A module whose forward we wrap to tag its attention calls (resolved again on the running model per call)."""

    path: str  # module path under the diffusion model, e.g. "blocks.3.self_attn"
    tag: tuple  # ("self", 3) / ("vace", 0) / ("double", 1) / ("single", 0)
    layer: Optional[int]  # index into the routed-layer order (None: not a routed layer, e.g. VACE)
    options_index: Optional[int]  # positional index of transformer_options in forward(...), if it has one

    @property
    def patch_key(self) -> str:
        return f"diffusion_model.{self.path}.forward"


@dataclass(frozen=True)
class CallLayout:
    """Where the tokens of one model call's self-attention are.

    ``[video, text]`` (``text_first`` False) or ``[text, video]``; ``text_len`` counts every non-grid token of the
    joint sequence (HunyuanVideo: prompt, byt5 glyph and vision tokens), all of which the model attends to fully."""

    grid: TokenGrid
    text_len: int = 0
    text_first: bool = False
    unsupported: Optional[str] = None  # why this call cannot be routed (it then runs dense), or None

    @property
    def seq_len(self) -> int:
        return self.grid.numel + self.text_len


def _options_index(forward) -> Optional[int]:
    try:
        params = [p for p in inspect.signature(forward).parameters.values() if p.name != "self"]
    except (TypeError, ValueError):
        return None
    for i, p in enumerate(params):
        if p.name == "transformer_options":
            return i if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) else None
    return None


@lru_cache(maxsize=None)
def _forward_signature(cls) -> inspect.Signature:
    return inspect.signature(cls._forward)


def bind_forward_args(dm, args, kwargs) -> Dict[str, object]:
    """The arguments of ``dm._forward`` by name (what the DIFFUSION_MODEL wrapper receives); the signature is read
    once per model class."""
    bound = _forward_signature(type(dm)).bind_partial(dm, *args, **kwargs)
    named = dict(bound.arguments)
    named.update(named.pop("kwargs", {}) or {})
    return named


def resolve(dm, path: str):
    """The module at ``path`` (dotted, with list indices) under the diffusion model that is running."""
    m = dm
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def _tokens(x) -> int:
    return int(x.shape[1]) if x is not None and hasattr(x, "shape") and x.ndim >= 2 else 0


class WanAdapter:
    family = "wan"
    layout = "wan"
    kv_from = "query"

    def __init__(self, dm):
        self.num_layers = len(dm.blocks)
        self.heads = int(dm.num_heads)
        self.dim = int(dm.dim)
        self.patch_size = tuple(int(p) for p in dm.patch_size)
        self.vace_layers = len(getattr(dm, "vace_blocks", None) or [])
        self.layer_groups = [(0, "blocks")]
        self._targets = self._find_targets(dm)

    def time_mlp(self, dm):
        return dm.time_embedding

    def targets(self) -> List[Target]:
        return self._targets

    @staticmethod
    def _find_targets(dm) -> List[Target]:
        out = []
        for i, block in enumerate(dm.blocks):
            out.append(Target(f"blocks.{i}.self_attn", ("self", i), i, _options_index(type(block.self_attn).forward)))
        for j, block in enumerate(getattr(dm, "vace_blocks", None) or []):
            out.append(Target(f"vace_blocks.{j}.self_attn", ("vace", j), None,
                              _options_index(type(block.self_attn).forward)))
        return out

    @staticmethod
    def preferred_attention(module):
        """ComfyUI >= 0.38: the per-layer attention choice (``ComfyAttention``) of a self-attention module."""
        return getattr(module, "comfy_attention", None)

    def call_layout(self, dm, args, kwargs) -> CallLayout:
        """``_forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)``: x is
        unpadded; ComfyUI pads to the patch size (ceil) and appends ``time_dim_concat`` frames on the time axis."""
        a = bind_forward_args(dm, args, kwargs)
        x = a["x"]
        pt, _, _ = self.patch_size
        grid = grid_from_latent(tuple(x.shape[2:5]), self.patch_size)
        tdc = a.get("time_dim_concat")
        if tdc is not None and hasattr(tdc, "shape"):
            grid = TokenGrid(grid.frames + ceil_div(tdc.shape[2], pt), grid.height, grid.width)
        why = None
        if a.get("context_latents") is not None:
            why = "Wan in-context reference latents (context_latents) add tokens outside the video grid"
        elif a.get("reference_latent") is not None and getattr(dm, "ref_conv", None) is not None:
            why = "Wan reference-latent tokens are prepended to the video grid"
        elif type(dm).__name__ == "CausalWanModel":
            why = "causal (autoregressive) Wan attends to a KV cache of earlier frames"
        elif type(dm).__name__ not in _WAN_GRID_MODELS:
            why = (f"{type(dm).__name__} is a Wan variant VORTA is not verified on (tokens or caches outside the "
                   "video grid)")
        return CallLayout(grid, 0, False, why)


# Wan classes whose self-attention sequence is exactly the (padded) latent grid (+ time_dim_concat frames).
_WAN_GRID_MODELS = {"WanModel", "VaceWanModel", "CameraWanModel", "HumoWanModel"}


class HunyuanAdapter:
    family = "hunyuan"
    layout = "hunyuan"
    kv_from = "key"

    def __init__(self, dm):
        self.double = len(dm.double_blocks)
        self.single = len(dm.single_blocks)
        self.num_layers = self.double + self.single
        self.heads = int(dm.num_heads)
        self.dim = int(dm.hidden_size)
        self.patch_size = tuple(int(p) for p in dm.patch_size)
        self.vace_layers = 0
        self.layer_groups = [(0, "double"), (self.double, "single")] if self.single else [(0, "double")]
        self._targets = [Target(f"double_blocks.{i}", ("double", i), i, _options_index(type(b).forward))
                         for i, b in enumerate(dm.double_blocks)]
        self._targets += [Target(f"single_blocks.{j}", ("single", j), self.double + j, _options_index(type(b).forward))
                          for j, b in enumerate(dm.single_blocks)]

    def time_mlp(self, dm):
        return dm.time_in

    def targets(self) -> List[Target]:
        return self._targets

    @staticmethod
    def preferred_attention(module):
        attn = getattr(module, "img_attn", module)
        return getattr(attn, "comfy_attention", getattr(module, "comfy_attention", None))

    @staticmethod
    def text_first(dm) -> bool:
        """Whether the joint sequence is [text, video].  ComfyUI <= 0.12 built [video, text] through the double
        blocks' ``flipped_img_txt`` flag (and the single blocks follow the same order); 0.13 removed the flag and
        put the text first everywhere, then also reports the video span as ``img_slice``, checked per call."""
        blocks = getattr(dm, "double_blocks", None)
        if blocks is not None and len(blocks):
            return not bool(getattr(blocks[0], "flipped_img_txt", False))
        return True

    def call_layout(self, dm, args, kwargs) -> CallLayout:
        """Video grid (img_in pads up) and the non-grid tokens: prompt, byt5 glyph tokens (when the model has
        ``byt5_in``) and vision tokens (HunyuanVideo 1.5 I2V, ``vision_in``)."""
        a = bind_forward_args(dm, args, kwargs)
        grid = grid_from_latent(tuple(a["x"].shape[2:5]), self.patch_size)
        text = _tokens(a.get("context"))
        if getattr(dm, "byt5_in", None) is not None:
            text += _tokens(a.get("txt_byt5"))
        if getattr(dm, "vision_in", None) is not None:
            text += _tokens(a.get("clip_fea"))
        why = None
        if a.get("ref_latent") is not None:
            why = "HunyuanVideo reference-latent tokens are prepended to the video grid"
        return CallLayout(grid, text, self.text_first(dm), why)


class UnsupportedModel(ValueError):
    """The MODEL is not a Wan or HunyuanVideo DiT this pack can patch."""


def detect(dm):
    """The adapter for a ComfyUI diffusion model (Wan incl. VACE/Camera/HuMo subclasses, HunyuanVideo 1 and 1.5)."""
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    from comfy.ldm.wan.model import WanModel

    if isinstance(dm, WanModel):
        return WanAdapter(dm)
    if isinstance(dm, HunyuanVideo):
        if len(getattr(dm, "patch_size", ())) != 3:
            raise UnsupportedModel("this HunyuanVideo-class model is an image model (2-D patches, HunyuanImage 2.1); "
                                   "VORTA routes video self-attention only")
        return HunyuanAdapter(dm)
    raise UnsupportedModel(f"VORTA supports Wan 2.x and HunyuanVideo models; this MODEL's diffusion model is "
                           f"{type(dm).__module__}.{type(dm).__name__}")
