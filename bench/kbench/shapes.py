"""The attention shapes the kernel benchmark runs: the ones users meet, each with its model's preset tile.

A shape with a ``model`` records which model it stands for (family, width); its tile must be the one preset
'auto' resolves for its grid (``vorta.comfy.settings.resolve_geometry``), which the unit test checks, so the
benchmark measures what users run.  Grids are token grids: the VAE latent after the patch embedding (Wan 2.1 and
HunyuanVideo: 8x spatial VAE and a 2x2 patch; Wan2.2-5B: 16x spatial VAE and a 2x2 patch, so 704x1280 ->
latent 44x80 -> tokens 22x40).  Frames: (video frames - 1) / 4 + 1."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

HEAD_DIM = 128


@dataclass(frozen=True)
class Shape:
    name: str
    grid: Tuple[int, int, int]  # token grid (frames, height, width)
    heads: int
    tile: Tuple[int, int, int]
    text: int = 0
    text_valid: Optional[int] = None  # valid text tokens per batch element (None: all)
    batch: int = 1  # B: 2 for a CFG batch (cond + uncond in one call)
    text_first: bool = False  # [text, video] as HunyuanVideo in ComfyUI >= 0.13
    model: Optional[Tuple[str, int]] = None  # (family, model width) for the preset check; None: synthetic
    coreset: bool = True  # synthetic tile shapes run the sliding branch only

    @property
    def family(self) -> str:
        return self.model[0] if self.model else "wan"

    @property
    def video(self) -> int:
        return math.prod(self.grid)

    @property
    def seq(self) -> int:
        return self.video + self.text

    @property
    def tile_tokens(self) -> int:
        return math.prod(self.tile)

    @property
    def valid_text(self) -> int:
        return self.text if self.text_valid is None else self.text_valid


WAN14, WAN13, WAN5, HUN = ("wan", 5120), ("wan", 1536), ("wan", 3072), ("hunyuan", 3072)

SHAPES: List[Shape] = [
    # the earlier results' shapes (bench/results/*kernels*), kept for comparison
    Shape("Wan2.1-14B 720p", (20, 45, 80), 40, (5, 9, 8), model=WAN14),
    Shape("Hunyuan 720p", (30, 45, 80), 24, (6, 9, 8), model=HUN),
    Shape("Hunyuan 720p +text", (30, 45, 80), 24, (6, 9, 8), text=80, text_valid=72, model=HUN),
    Shape("Wan2.1-1.3B 480p", (21, 30, 52), 12, (4, 6, 8), model=WAN13),
    Shape("Wan-14B 81f ragged", (21, 45, 80), 40, (5, 9, 8), model=WAN14),
    Shape("aligned 18x48x80 t6x8x8", (18, 48, 80), 40, (6, 8, 8), coreset=False),
    # issue 15: the shapes users run (tiles 192 to 432 tokens)
    Shape("Wan2.2-5B 720p 121f", (31, 22, 40), 24, (4, 6, 8), model=WAN5),
    Shape("Wan-14B 480p 81f", (21, 30, 52), 40, (4, 6, 8), model=WAN14),
    Shape("Wan-14B 1024x1024 49f", (13, 64, 64), 40, (5, 9, 8), model=WAN14),
    Shape("Wan-14B 720x1280 portrait 81f", (21, 80, 45), 40, (5, 9, 8), model=WAN14),
    Shape("Wan-14B 720p 121f", (31, 45, 80), 40, (5, 9, 8), model=WAN14),
    Shape("Wan-14B 720p 81f CFG B=2", (21, 45, 80), 40, (5, 9, 8), batch=2, model=WAN14),
    Shape("Hunyuan 720p 117f text 100", (30, 45, 80), 24, (6, 9, 8), text=100, text_valid=77, text_first=True,
          model=HUN),
    Shape("Hunyuan 720p 129f text 256", (33, 45, 80), 24, (6, 9, 8), text=256, text_valid=203, text_first=True,
          model=HUN),
]


def preset_tile(s: Shape) -> Optional[Tuple[int, int, int]]:
    """The tile preset 'auto' resolves for this shape's model and grid (schedule mode, no router), or None."""
    if s.model is None:
        return None
    from comfyui_vorta.vorta.comfy.settings import Settings, resolve_geometry
    from comfyui_vorta.vorta.geometry import TokenGrid

    family, dim = s.model
    return tuple(resolve_geometry(Settings(), family, TokenGrid(*s.grid), dim).config.tile)


def select(spec: Optional[str], shapes: List[Shape] = SHAPES) -> List[Shape]:
    """``--shapes``: comma-separated indices into the list or case-insensitive name substrings, in the order
    given (a substring adds every shape whose name holds it); None: every shape.  Raises on a part that matches
    nothing, so a typo does not silently run nothing."""
    if not spec:
        return list(shapes)
    out: List[Shape] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.isdigit():
            if int(part) >= len(shapes):
                raise ValueError(f"shape index {part} out of range (0..{len(shapes) - 1})")
            hits = [shapes[int(part)]]
        else:
            hits = [s for s in shapes if part.lower() in s.name.lower()]
            if not hits:
                raise ValueError(f"no shape name contains {part!r}")
        out += [s for s in hits if s not in out]
    return out


def describe(s: Shape) -> str:
    text = f", text {s.text} ({s.valid_text} valid{', first' if s.text_first else ''})" if s.text else ""
    return (f"{s.name}: B={s.batch} grid {'x'.join(map(str, s.grid))} ({s.video} tokens{text}), {s.heads} heads, "
            f"tile {'x'.join(map(str, s.tile))} ({s.tile_tokens} tokens)")
