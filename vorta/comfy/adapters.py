"""One adapter per model family: what to tag, where the time MLP is, and the token grid of a model call.

ComfyUI classes are imported lazily so that this module (and the package) imports without ComfyUI.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..geometry import TokenGrid, grid_from_latent


@dataclass(frozen=True)
class Target:
    """A module whose forward we wrap to tag its attention calls."""

    path: str  # object-patch path, e.g. "diffusion_model.blocks.3.self_attn.forward"
    tag: tuple  # ("self", 3) / ("vace", 0) / ("double", 1) / ("single", 0)
    layer: Optional[int]  # index into the routed-layer order (None: not a routed layer, e.g. VACE)
    module: object
    options_index: Optional[int]  # positional index of transformer_options in forward(...), if it has one


def _options_index(forward) -> Optional[int]:
    try:
        params = [p for p in inspect.signature(forward).parameters.values() if p.name != "self"]
    except (TypeError, ValueError):
        return None
    for i, p in enumerate(params):
        if p.name == "transformer_options":
            return i if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) else None
    return None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class WanAdapter:
    family = "wan"
    layout = "wan"
    kv_from = "query"

    def __init__(self, dm):
        self.dm = dm
        self.num_layers = len(dm.blocks)
        self.heads = int(dm.num_heads)
        self.dim = int(dm.dim)
        self.patch_size = tuple(int(p) for p in dm.patch_size)
        self.vace_layers = len(getattr(dm, "vace_blocks", None) or [])
        self.layer_groups = [(0, "blocks")]

    def time_mlp(self, dm):
        return dm.time_embedding

    def targets(self) -> List[Target]:
        out = []
        for i, block in enumerate(self.dm.blocks):
            attn = block.self_attn
            out.append(Target(f"diffusion_model.blocks.{i}.self_attn.forward", ("self", i), i, attn,
                              _options_index(type(attn).forward)))
        for j, block in enumerate(getattr(self.dm, "vace_blocks", None) or []):
            attn = block.self_attn
            out.append(Target(f"diffusion_model.vace_blocks.{j}.self_attn.forward", ("vace", j), None, attn,
                              _options_index(type(attn).forward)))
        return out

    def call_layout(self, dm, args, kwargs) -> Tuple[TokenGrid, int]:
        """Grid of the video tokens and the number of text tokens in self-attention (0 for Wan).

        ``_forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options)``: x is unpadded;
        ComfyUI pads to the patch size (ceil) and appends ``time_dim_concat`` frames on the time axis."""
        x = args[0]
        pt, ph, pw = self.patch_size
        grid = grid_from_latent(tuple(x.shape[2:5]), self.patch_size)
        tdc = args[4] if len(args) > 5 else kwargs.get("time_dim_concat")
        if tdc is not None and hasattr(tdc, "shape"):
            grid = TokenGrid(grid.frames + _ceil_div(tdc.shape[2], pt), grid.height, grid.width)
        return grid, 0


class HunyuanAdapter:
    family = "hunyuan"
    layout = "hunyuan"
    kv_from = "key"

    def __init__(self, dm):
        self.dm = dm
        self.double = len(dm.double_blocks)
        self.single = len(dm.single_blocks)
        self.num_layers = self.double + self.single
        self.heads = int(dm.num_heads)
        self.dim = int(dm.hidden_size)
        self.patch_size = tuple(int(p) for p in dm.patch_size)
        self.vace_layers = 0
        self.layer_groups = [(0, "double"), (self.double, "single")]

    def time_mlp(self, dm):
        return dm.time_in

    def targets(self) -> List[Target]:
        out = []
        for i, block in enumerate(self.dm.double_blocks):
            out.append(Target(f"diffusion_model.double_blocks.{i}.forward", ("double", i), i, block,
                              _options_index(type(block).forward)))
        for j, block in enumerate(self.dm.single_blocks):
            out.append(Target(f"diffusion_model.single_blocks.{j}.forward", ("single", j), self.double + j, block,
                              _options_index(type(block).forward)))
        return out

    def call_layout(self, dm, args, kwargs) -> Tuple[TokenGrid, int]:
        """``_forward(x, timestep, context, y, txt_byt5, guidance, attention_mask, guiding_frame_index, ref_latent,
        disable_time_r, control, transformer_options)``: video tokens (img_in pads up) then the text tokens."""
        x = args[0]
        grid = grid_from_latent(tuple(x.shape[2:5]), self.patch_size)
        context = args[2] if len(args) > 2 else kwargs.get("context")
        text = int(context.shape[1]) if context is not None else 0
        byt5 = args[4] if len(args) > 4 else kwargs.get("txt_byt5")
        if byt5 is not None and getattr(dm, "byt5_in", None) is not None:
            text += int(byt5.shape[1])
        return grid, text


class UnsupportedModel(ValueError):
    """The MODEL is not a Wan or HunyuanVideo DiT this pack can patch."""


def detect(dm):
    """The adapter for a ComfyUI diffusion model (Wan incl. VACE/Camera/S2V/HuMo/Animate subclasses, HunyuanVideo)."""
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
