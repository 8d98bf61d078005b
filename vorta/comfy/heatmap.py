"""The routing preview: a (step x layer x head) decision table as a heat map and a short text summary.

No ComfyUI imports; PIL (a ComfyUI dependency) draws the legend text when available.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..config import BRANCHES
from ..router import branch_shares

COLORS = {0: (96, 96, 96), 1: (66, 135, 245), 2: (245, 166, 35)}  # full grey, coreset blue, sliding orange
SEPARATOR = (255, 255, 255)
BACKGROUND = (24, 24, 24)


def render_table(table: torch.Tensor, layer_groups: Optional[Sequence[tuple]] = None, max_width: int = 1600,
                 min_width: int = 512) -> torch.Tensor:
    """(steps, layers, heads) int table -> IMAGE tensor [1, H, W, 3] float in [0, 1].

    Rows are sampling steps (top = first step), columns are layers left to right, each layer a block of its
    heads separated by a 1-px white line; a legend with the branch colours and shares sits below.
    ``layer_groups`` optionally marks ranges such as (start, name) ('double', 'single') in the legend."""
    if table.ndim != 3:
        raise ValueError(f"routing table must be (steps, layers, heads), got shape {tuple(table.shape)}")
    steps, layers, heads = table.shape
    steps, layers, heads = max(steps, 1), max(layers, 1), max(heads, 1)
    cw = max(1, min(16, min_width // (layers * heads)))
    while cw > 1 and layers * (heads * cw + 1) > max_width:
        cw -= 1
    rh = max(2, min(16, 384 // steps))
    block = heads * cw + 1
    width = max(layers * block + 1, 320)
    grid_h = steps * rh
    legend_h = 44
    img = torch.tensor(BACKGROUND, dtype=torch.uint8).view(1, 1, 3).repeat(grid_h + legend_h, width, 1)

    lut = torch.tensor([COLORS[i] for i in range(3)], dtype=torch.uint8)
    if table.numel():
        cells = lut[table.clamp(0, 2).long().cpu()]  # (steps, layers, heads, 3)
        cells = cells.repeat_interleave(rh, 0).repeat_interleave(cw, 2)  # (S*rh, layers, heads*cw, 3)
        for l in range(table.shape[1]):
            x0 = l * block + 1
            img[:grid_h, x0:x0 + heads * cw] = cells[:, l]
            img[:grid_h, x0 - 1] = torch.tensor(SEPARATOR, dtype=torch.uint8)
        img[:grid_h, table.shape[1] * block] = torch.tensor(SEPARATOR, dtype=torch.uint8)

    shares = branch_shares(table) if table.numel() else [0.0, 0.0, 0.0]
    labels = [f"{name} {s:.0%}" for name, s in zip(BRANCHES, shares)]
    y0 = grid_h + 8
    x = 6
    for i in range(3):
        img[y0:y0 + 12, x:x + 12] = torch.tensor(COLORS[i], dtype=torch.uint8)
        x += 100
    img = _draw_text(img, labels, grid_h, steps, layers, layer_groups)
    return img.float().div(255.0).unsqueeze(0)


def _draw_text(img: torch.Tensor, labels, grid_h: int, steps: int, layers: int, layer_groups) -> torch.Tensor:
    try:
        from PIL import Image, ImageDraw
    except Exception:  # pragma: no cover - PIL ships with ComfyUI
        return img
    pil = Image.fromarray(img.numpy())
    draw = ImageDraw.Draw(pil)
    x = 6
    for lab in labels:
        draw.text((x + 16, grid_h + 7), lab, fill=(235, 235, 235))
        x += 100
    axis = f"rows: {steps} steps (top = first)   columns: {layers} layers x heads"
    if layer_groups:
        axis += "   (" + ", ".join(f"{name} from {start}" for start, name in layer_groups) + ")"
    draw.text((6, grid_h + 26), axis, fill=(180, 180, 180))
    return torch.from_numpy(__import__("numpy").array(pil))


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
        lines.append(f"step {i}: " + " ".join(f"{n[0].upper()}{v:.0%}" for n, v in zip(BRANCHES, s)))
    return "\n".join(lines)
