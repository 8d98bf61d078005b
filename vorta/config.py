"""Sparse-attention settings (tile, window, bucket, ratio) and the presets per model and resolution."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from .geometry import Triple, as_triple

BRANCHES = ("full", "coreset", "sliding")  # router output order (official code: 0 full, 1 coreset, 2 sliding)
FULL, CORESET, SLIDING = 0, 1, 2
FAMILIES = ("wan", "hunyuan")


@dataclass(frozen=True)
class VortaConfig:
    """Everything the sparse branches need besides the tensors.

    tile: tokens per sliding tile (F, H, W); window: sliding window in tiles; bucket: coreset bucket in
    tokens; ratio: share of each bucket pruned (0.5 keeps center + 5 of 12).  The defaults are the official
    Wan2.1-14B training geometry.  How heads are routed (``tau_sparse``) is not geometry: see ``vorta.router``."""

    tile: Triple = (5, 9, 8)
    window: Triple = (3, 3, 3)
    bucket: Triple = (2, 3, 2)
    ratio: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "tile", as_triple(self.tile, "tile"))
        object.__setattr__(self, "window", as_triple(self.window, "window"))
        object.__setattr__(self, "bucket", as_triple(self.bucket, "bucket"))
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"coreset ratio must be in [0, 1), got {self.ratio}")


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    description: str
    config: VortaConfig
    latent_grid: Optional[Triple]  # the grid the settings were chosen for (official: trained on)


PRESETS: Dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("wan2.1-14b-720p", "wan", "Wan2.1-T2V-14B 720p: the official router's training settings",
               VortaConfig(), (20, 45, 80)),  # the VortaConfig defaults
        Preset("hunyuan-720p", "hunyuan", "HunyuanVideo 720p: the official router's training settings",
               VortaConfig(tile=(6, 9, 8)), (30, 45, 80)),
        # No official choice exists for these; tiles are chosen so the 3x3x3 window covers about the same
        # share of the grid as the 14B/720p setting (13-17 %) and tiles stay near 200-400 tokens.
        Preset("wan2.1-1.3b-480p", "wan", "Wan2.1 1.3B 480p (grid 21x30x52): ours, no official setting",
               VortaConfig(tile=(4, 6, 8)), (21, 30, 52)),
        Preset("wan2.2-5b-720p", "wan", "Wan2.2 TI2V-5B 720p (grid 31x22x40): ours, no official setting",
               VortaConfig(tile=(4, 6, 8)), (31, 22, 40)),
    )
}


def preset_for(family: str, grid: Optional[Triple] = None, dim: Optional[int] = None) -> Preset:
    """Best preset for a model family (and, when known, its grid and width): the official setting for
    Wan-14B/Hunyuan 720p-like grids, otherwise ours."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    if family == "hunyuan":
        return PRESETS["hunyuan-720p"]
    if dim == 3072:
        return PRESETS["wan2.2-5b-720p"]
    if grid is not None and grid[1] * grid[2] < 45 * 80 * 0.75:
        return PRESETS["wan2.1-1.3b-480p"]
    return PRESETS["wan2.1-14b-720p"]
