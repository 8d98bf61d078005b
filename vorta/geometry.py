"""Token-grid geometry shared by the reference branches, the kernels' launchers and the tests.

One definition of every rule lives here: the latent token grid, the sliding-tile layout and window rule,
and the coreset bucket partition with its center rule.

Ragged extension (any grid size). The official code refuses grids that tiles or buckets do not divide.
We cut the grid with ``ceil`` counts instead, so the last tile/bucket along an axis may be *partial*:

* tiles: tile ``a`` along an axis covers tokens ``[a*t, min((a+1)*t, n))``; the window rule works on tile
  coordinates over ``ceil(n/t)`` tiles, so a partial border tile is simply a smaller tile;
* buckets: a partial bucket of ``m < |bucket|`` tokens keeps its center (local coords ``extent//2`` per
  axis) plus ``clamp(int(m*(1-r)) - 1, 0, m-1)`` least-similar margins; pruned tokens copy the center;
* every token belongs to exactly one tile and one bucket, so no token loses its output; padded slots
  (positions of a partial tile beyond the grid) exist only inside kernels and are masked out.

When every axis divides, ``ceil == floor`` and all rules are exactly the official ones (spec §3, §4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Tuple

import torch

Triple = Tuple[int, int, int]


def blocks_per_axis(grid: "TokenGrid", size: Triple) -> Triple:
    """How many blocks (tiles or buckets) of ``size`` cover ``grid`` per axis, the last one partial."""
    return tuple(ceil_div(n, b) for n, b in zip(grid.shape, size))  # type: ignore


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def as_triple(value, name: str = "value") -> Triple:
    """Accept an int or a 3-sequence of positive ints; used for tile/window/bucket/grid arguments."""
    if isinstance(value, int):
        value = (value, value, value)
    t = tuple(int(v) for v in value)
    if len(t) != 3 or any(v < 1 for v in t):
        raise ValueError(f"{name} must be three positive integers (frames, height, width), got {value!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class TokenGrid:
    """The latent token grid (F, H, W) in raster order: token index = (f*H + y)*W + x."""

    frames: int
    height: int
    width: int

    def __post_init__(self):
        as_triple(self.shape, "grid")

    @property
    def shape(self) -> Triple:
        return (self.frames, self.height, self.width)

    @property
    def numel(self) -> int:
        return self.frames * self.height * self.width

    def coords(self, device=None) -> torch.Tensor:
        """(L, 3) int64 coordinates (f, y, x) of every token in raster order."""
        f, h, w = torch.meshgrid(
            torch.arange(self.frames, device=device),
            torch.arange(self.height, device=device),
            torch.arange(self.width, device=device),
            indexing="ij",
        )
        return torch.stack([f.flatten(), h.flatten(), w.flatten()], dim=1)


def grid_from_latent(latent_shape, patch_size=(1, 2, 2)) -> TokenGrid:
    """Token grid of a latent (T, H, W) after a patchify that pads up (ComfyUI pads to the patch size)."""
    t, h, w = latent_shape
    pt, ph, pw = patch_size
    return TokenGrid(ceil_div(t, pt), ceil_div(h, ph), ceil_div(w, pw))


# ---------------------------------------------------------------------------------------------------
# Sliding tile attention


@dataclass(frozen=True)
class TileLayout:
    """Tiles of ``tile`` tokens over ``grid``; partial tiles on the far border of each axis."""

    grid: TokenGrid
    tile: Triple

    @property
    def tile_grid(self) -> Triple:
        return blocks_per_axis(self.grid, self.tile)

    @property
    def num_tiles(self) -> int:
        return math.prod(self.tile_grid)

    @property
    def tile_tokens(self) -> int:
        return math.prod(self.tile)

    def token_tile(self) -> torch.Tensor:
        """(L,) tile index (raster over the tile grid) of each raster-order token."""
        c = self.grid.coords()
        _, nh, nw = self.tile_grid
        a = c[:, 0] // self.tile[0]
        b = c[:, 1] // self.tile[1]
        cc = c[:, 2] // self.tile[2]
        return (a * nh + b) * nw + cc

    def permutation(self) -> torch.Tensor:
        """Raster index of each position of the tiled sequence (tiles in raster order over the tile grid,
        tokens inside a tile in raster order). Equals the official (nF,tF,nH,tH,nW,tW) -> (nF,nH,nW,tF,tH,tW)
        rearrange when the tiles divide the grid."""
        c = self.grid.coords()
        local = ((c[:, 0] % self.tile[0]) * self.tile[1] + c[:, 1] % self.tile[1]) * self.tile[2] + c[:, 2] % self.tile[2]
        key = self.token_tile() * self.tile_tokens + local
        return torch.argsort(key, stable=True)


    def tile_token_index(self) -> torch.Tensor:
        """(num_tiles, tile_tokens) raster index of each slot of each tile, -1 for padded slots of partial
        tiles. This is the padded tiled layout the kernels compute in (without materialising it)."""
        nf, nh, nw = self.tile_grid
        tf, th, tw = self.tile
        F, H, W = self.grid.shape
        a, b, c = torch.meshgrid(torch.arange(nf), torch.arange(nh), torch.arange(nw), indexing="ij")
        lf, lh, lw = torch.meshgrid(torch.arange(tf), torch.arange(th), torch.arange(tw), indexing="ij")
        f = a.reshape(-1, 1) * tf + lf.reshape(1, -1)
        y = b.reshape(-1, 1) * th + lh.reshape(1, -1)
        x = c.reshape(-1, 1) * tw + lw.reshape(1, -1)
        idx = (f * H + y) * W + x
        return torch.where((f < F) & (y < H) & (x < W), idx, torch.full_like(idx, -1))


def window_center(tile_coord: torch.Tensor, half: int, count: int) -> torch.Tensor:
    """Clamped window center along one axis (spec §4.2). When the axis has fewer tiles than the window,
    ``min > max`` and torch.clamp returns the max bound, which makes the whole axis visible."""
    return torch.clamp(tile_coord, min=half, max=count - 1 - half)


def visible_key_tiles(layout: TileLayout, window: Triple) -> torch.Tensor:
    """(num_tiles, num_tiles) bool: may query tile i see key tile j.  The window is in tiles; an even
    window w acts like 2*(w//2)+1 (official behaviour)."""
    nf, nh, nw = layout.tile_grid
    a, b, c = torch.meshgrid(torch.arange(nf), torch.arange(nh), torch.arange(nw), indexing="ij")
    coords = torch.stack([a.flatten(), b.flatten(), c.flatten()], 1)
    allowed = torch.ones(layout.num_tiles, layout.num_tiles, dtype=torch.bool)
    for axis, (count, w) in enumerate(zip(layout.tile_grid, window)):
        half = w // 2
        center = window_center(coords[:, axis], half, count)
        allowed &= (center[:, None] - coords[None, :, axis]).abs() <= half
    return allowed


@lru_cache(maxsize=64)
def key_tile_table(grid: TokenGrid, tile: Triple, window: Triple) -> torch.Tensor:
    """(num_tiles, max_visible) int64 key tiles each query tile sees, in increasing order, padded with -1.
    With every tile-grid axis >= its window this is a dense table of prod(2*(w//2)+1) tiles."""
    allowed = visible_key_tiles(TileLayout(grid, tile), window)
    counts = allowed.sum(1)
    width = int(counts.max())
    order = torch.argsort((~allowed).to(torch.int8), dim=1, stable=True)[:, :width]
    return torch.where(torch.arange(width)[None, :] < counts[:, None], order, torch.full_like(order, -1))


def sliding_density(grid: TokenGrid, tile: Triple, window: Triple) -> float:
    """Share of (query, key) video pairs the sliding branch computes (exact, counts partial tiles)."""
    layout = TileLayout(grid, tile)
    tok = torch.bincount(layout.token_tile(), minlength=layout.num_tiles).double()
    allowed = visible_key_tiles(layout, window).double()
    pairs = (tok[:, None] * allowed * tok[None, :]).sum()
    return float(pairs / float(grid.numel) ** 2)


# ---------------------------------------------------------------------------------------------------
# Coreset buckets


@dataclass(frozen=True)
class BucketLayout:
    """Bucket partition of ``grid`` (raster over the bucket grid; raster order inside each bucket)."""

    grid: TokenGrid
    bucket: Triple
    ratio: float

    @property
    def bucket_grid(self) -> Triple:
        return blocks_per_axis(self.grid, self.bucket)

    @property
    def num_buckets(self) -> int:
        return math.prod(self.bucket_grid)

    def members(self) -> torch.Tensor:
        """(G, |bucket|) raster token index of each bucket slot in local raster order, -1 where a partial
        bucket has no token."""
        return TileLayout(self.grid, self.bucket).tile_token_index()

    def extents(self) -> torch.Tensor:
        """(G, 3) actual extent of each bucket (smaller than the bucket on the far borders)."""
        nb = self.bucket_grid
        per_axis = []
        for n, b, cnt in zip(self.grid.shape, self.bucket, nb):
            starts = torch.arange(cnt) * b
            per_axis.append(torch.clamp(n - starts, max=b))
        e = torch.meshgrid(*per_axis, indexing="ij")
        return torch.stack([t.flatten() for t in e], 1)

    def center_slot(self) -> torch.Tensor:
        """(G,) slot (local raster index in the full-size bucket) of each bucket's center token."""
        e = self.extents()
        bf, bh, bw = self.bucket
        return ((e[:, 0] // 2) * bh + e[:, 1] // 2) * bw + e[:, 2] // 2

    def keep_count(self) -> torch.Tensor:
        """(G,) margins kept per bucket: ``int(|bucket|*(1-r)) - 1`` (official), clamped to [0, |bucket|-1];
        partial buckets use their own size."""
        sizes = self.extents().prod(1)
        k = (sizes.double() * (1 - self.ratio)).floor().long() - 1
        return torch.minimum(torch.clamp(k, min=0), sizes - 1)

    @property
    def pooled_length(self) -> int:
        """Kept tokens in total (centers + kept margins)."""
        return int(self.num_buckets + self.keep_count().sum())


def coreset_density(grid: TokenGrid, bucket: Triple, ratio: float) -> float:
    """Share of (query, key) video pairs the coreset branch computes: (pooled / L)^2."""
    layout = BucketLayout(grid, bucket, ratio)
    return (layout.pooled_length / grid.numel) ** 2
