"""The routing heat map: a (step x layer x head) decision table drawn to be read at node size, plus its summary text.

Rows are sampling steps (top = first), columns are layers.  Where every head of every layer gets at least
``MIN_HEAD_PX`` pixels, each head is its own column; otherwise (real models: Wan-14B has 40 x 40 heads) each layer
is one column split into its full / coreset / sliding shares.  Step and layer tick labels, the branch legend and the
axis line are drawn large enough to stay legible when ComfyUI scales the image down to the node's width.
No ComfyUI imports; PIL (a ComfyUI dependency) draws the text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..config import BRANCHES
from ..router import branch_shares

COLORS = {0: (96, 96, 96), 1: (66, 135, 245), 2: (245, 166, 35)}  # full grey, coreset blue, sliding orange
LABELS = ("full", "coreset", "sliding tile")
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
DIM_TEXT = (170, 170, 170)
GROUP_LINE = (255, 255, 255)
PLOT_WIDTH = 896  # pixels for the columns; the image is about 1000 px wide, shown at ~400-500 px on a node
MIN_HEAD_PX = 2  # narrower head columns are aggregated per layer
FONT_PX = 22  # legend and tick text: ~10 px when the node shows the image at half size
MIN_WIDTH = 720  # room for the legend line under small tables


@dataclass(frozen=True)
class Layout:
    """Where things go: per-head columns or per-layer shares, column and row sizes, margins, font size."""

    per_head: bool
    layer_px: int  # width of one layer's column block (without the 1-px gap)
    row_px: int
    left: int  # room for the step labels
    top: int
    legend_h: int
    font_px: int

    def width(self, layers: int) -> int:
        return max(self.left + layers * (self.layer_px + 1) + 16, MIN_WIDTH)

    def height(self, steps: int) -> int:
        return self.top + steps * self.row_px + self.legend_h


def layout(steps: int, layers: int, heads: int, groups: bool = False) -> Layout:
    """Column and row sizes for a table shape (``groups``: room above the columns for layer-group names)."""
    steps, layers, heads = max(steps, 1), max(layers, 1), max(heads, 1)
    per_layer = max(4, min(96, PLOT_WIDTH // layers - 1))
    per_head = per_layer // heads >= MIN_HEAD_PX
    layer_px = (per_layer // heads) * heads if per_head else per_layer
    row_px = max(3, min(24, 480 // steps))
    return Layout(per_head, layer_px, row_px, left=72, top=FONT_PX + 14 if groups else 16,
                  legend_h=3 * FONT_PX + 56, font_px=FONT_PX)


def _columns(table: torch.Tensor, lay: Layout) -> torch.Tensor:
    """(steps, layers, layer_px) branch index per pixel column of each layer block."""
    steps, layers, heads = table.shape
    t = table.clamp(0, 2).long().cpu()
    if lay.per_head:
        return t.repeat_interleave(lay.layer_px // heads, dim=2)
    counts = torch.stack([(t == b).sum(-1) for b in range(3)], -1).float() / heads  # (steps, layers, 3)
    cum = counts.cumsum(-1)
    x = (torch.arange(lay.layer_px, dtype=torch.float32) + 0.5) / lay.layer_px
    return (x >= cum[..., 0:1]).long() + (x >= cum[..., 1:2]).long()


def render_table(table: torch.Tensor, layer_groups: Optional[Sequence[tuple]] = None) -> torch.Tensor:
    """(steps, layers, heads) int table -> IMAGE tensor [1, H, W, 3] float in [0, 1].

    ``layer_groups`` marks where named layer ranges start, e.g. [(0, 'double'), (20, 'single')] for HunyuanVideo:
    a white line and the group's name at each start after the first."""
    if table.ndim != 3:
        raise ValueError(f"routing table must be (steps, layers, heads), got shape {tuple(table.shape)}")
    steps, layers, heads = table.shape
    lay = layout(steps, layers, heads, groups=len(layer_groups or []) > 1)
    s, n = max(steps, 1), max(layers, 1)
    width, height = lay.width(n), lay.height(s)
    img = torch.tensor(BACKGROUND, dtype=torch.uint8).view(1, 1, 3).repeat(height, width, 1)
    lut = torch.tensor([COLORS[i] for i in range(3)], dtype=torch.uint8)
    if table.numel():
        cells = lut[_columns(table, lay)].repeat_interleave(lay.row_px, 0)  # (steps*row_px, layers, layer_px, 3)
        y0 = lay.top
        for layer in range(layers):
            x0 = lay.left + layer * (lay.layer_px + 1)
            img[y0:y0 + steps * lay.row_px, x0:x0 + lay.layer_px] = cells[:, layer]
    for start, _ in (layer_groups or [])[1:]:
        x = lay.left + start * (lay.layer_px + 1) - 1
        img[lay.top - 8:lay.top + s * lay.row_px + 8, x] = torch.tensor(GROUP_LINE, dtype=torch.uint8)  # in the gap
    return _draw_text(img, table, lay, layer_groups).float().div(255.0).unsqueeze(0)


def _ticks(count: int, pixels_per_item: float, min_gap_px: float) -> list:
    """Indices to label: 0, every k-th (k from 1, 2, 5, 10, ... so labels keep ``min_gap_px`` apart) and the last."""
    k = 1
    for k in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000):
        if k * pixels_per_item >= min_gap_px:
            break
    ticks = list(range(0, count, k))
    if count - 1 not in ticks and (count - 1 - ticks[-1]) * pixels_per_item >= min_gap_px:
        ticks.append(count - 1)
    return ticks


def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, AttributeError, OSError):  # pragma: no cover - older Pillow: the small bitmap font
        return ImageFont.load_default()


def _draw_text(img: torch.Tensor, table: torch.Tensor, lay: Layout, layer_groups) -> torch.Tensor:
    try:
        from PIL import Image, ImageDraw
    except Exception:  # pragma: no cover - PIL ships with ComfyUI
        return img
    import numpy as np

    steps, layers, heads = table.shape
    pil = Image.fromarray(img.numpy())
    draw = ImageDraw.Draw(pil)
    font, small = _font(lay.font_px), _font(lay.font_px - 4)
    grid_bottom = lay.top + max(steps, 1) * lay.row_px
    for i in _ticks(steps, lay.row_px, lay.font_px + 4):  # step numbers, 1-based as samplers count them
        y = lay.top + i * lay.row_px + lay.row_px // 2
        draw.text((lay.left - 8, y), str(i + 1), font=small, fill=DIM_TEXT, anchor="rm")
    for i in _ticks(layers, lay.layer_px + 1, 2.2 * lay.font_px):  # layer indices, as dense_blocks counts them
        x = lay.left + i * (lay.layer_px + 1) + lay.layer_px // 2
        draw.text((x, grid_bottom + 4), str(i), font=small, fill=DIM_TEXT, anchor="mt")
    for start, name in (layer_groups or [])[1:]:
        draw.text((lay.left + start * (lay.layer_px + 1) + 4, 4), f"{name} blocks from {start}", font=small, fill=TEXT)
    y = grid_bottom + lay.font_px + 12
    shares = branch_shares(table) if table.numel() else [0.0, 0.0, 0.0]
    x = lay.left
    for b in range(3):
        draw.rectangle((x, y + 2, x + lay.font_px - 4, y + lay.font_px - 2), fill=COLORS[b])
        label = f"{LABELS[b]} {shares[b]:.0%}"
        draw.text((x + lay.font_px + 4, y), label, font=font, fill=TEXT)
        x += lay.font_px + 24 + int(draw.textlength(label, font=font))
    columns = "heads" if lay.per_head else f"layers ({heads} heads each, as shares)"
    axis = f"rows: steps 1-{steps} (top = first)   columns: {columns}, layers 0-{layers - 1}"
    draw.text((lay.left, y + lay.font_px + 10), axis, font=small, fill=DIM_TEXT)
    return torch.from_numpy(np.array(pil))


def table_summary(table: torch.Tensor, flops_saved: Optional[float] = None, header: str = "") -> str:
    """Share of heads per branch over the whole schedule, per-step shares, and attention FLOPs saved."""
    shares = branch_shares(table) if table.numel() else [0.0, 0.0, 0.0]
    lines = []
    if header:
        lines.append(header)
    lines.append("heads: " + ", ".join(f"{n} {s:.1%}" for n, s in zip(BRANCHES, shares)))
    if flops_saved is not None:
        lines.append(f"attention FLOPs: {1 - flops_saved:.1%} of dense ({flops_saved:.1%} saved)")
    for i in range(table.shape[0]):
        s = branch_shares(table[i])
        lines.append(f"step {i + 1}: " + " ".join(f"{n[0].upper()}{v:.0%}" for n, v in zip(BRANCHES, s)))
    return "\n".join(lines)
