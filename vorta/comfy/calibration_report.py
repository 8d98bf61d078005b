"""The calibration report: a text summary with the trade-off curve as a table, and one IMAGE (the decision heat map
above the trade-off curve).  No ComfyUI imports; PIL (a ComfyUI dependency) draws the curve when available."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..calibration_rule import TradeoffPoint
from ..calibration_table import Calibration
from ..config import BRANCHES
from .heatmap import render_table


def step_stats(cal: Calibration, decisions: torch.Tensor) -> List[dict]:
    """Per calibrated step: the median / mean / max error per sparse branch over (layer, head) and the decisions'
    shares (what ``step_stats`` in the file's metadata holds)."""
    out = []
    for i in range(cal.steps):
        e = cal.errors[i]
        row = {"t": round(float(cal.t[i]), 4), "sigma": round(float(cal.sigma[i]), 6)}
        for b, name in ((1, "coreset"), (2, "sliding")):
            x = e[..., b][torch.isfinite(e[..., b])]
            row[name] = ({"median": round(float(x.median()), 4), "mean": round(float(x.mean()), 4),
                          "max": round(float(x.max()), 4)} if x.numel() else None)
        counts = torch.bincount(decisions[i].flatten(), minlength=3).double()
        row["shares"] = [round(float(c), 4) for c in counts / counts.sum()]
        out.append(row)
    return out


def curve_table(points: Sequence[TradeoffPoint], chosen: float) -> List[str]:
    lines = ["| max_error | attention FLOPs saved | mean error | worst error | full / coreset / sliding |",
             "|---|---|---|---|---|"]
    for p in points:
        mark = " **(chosen)**" if abs(p.max_error - chosen) < 1e-12 else ""
        lines.append(f"| {p.max_error:g}{mark} | {p.saved:.1%} | {p.mean_error:.3f} | {p.worst_error:.3f} | "
                     + " / ".join(f"{s:.0%}" for s in p.shares) + " |")
    return lines


def report_text(header: Sequence[str], cal: Calibration, chosen: TradeoffPoint, points: Sequence[TradeoffPoint],
                stats: Sequence[dict], footer: Sequence[str] = ()) -> str:
    lines = list(header)
    lines.append(f"chosen max_error {chosen.max_error:g}: attention FLOPs saved {chosen.saved:.1%} on the calibrated "
                 f"steps, mean error of the chosen branches {chosen.mean_error:.3f} (worst {chosen.worst_error:.3f}); "
                 "heads " + ", ".join(f"{n} {s:.1%}" for n, s in zip(BRANCHES, chosen.shares)))
    lines += ["", "trade-off (the same measurement, other knob values):"] + curve_table(points, chosen.max_error)
    lines += ["", "per calibrated step: median error coreset / sliding over (layer, head); decisions F/C/S"]
    for i, s in enumerate(stats):
        med = ["-" if s[b] is None else f"{s[b]['median']:.3f}" for b in ("coreset", "sliding")]
        lines.append(f"step {i} (sigma {s['sigma']:.4f}, t {s['t']:.1f}): {med[0]} / {med[1]}; "
                     + " ".join(f"{n[0].upper()}{v:.0%}" for n, v in zip(BRANCHES, s["shares"])))
    if cal.skipped:
        lines.append("calls not measured (they run full attention with this router too): "
                     + "; ".join(f"{r} (x{n})" for r, n in cal.skipped.items()))
    lines += list(footer)
    return "\n".join(lines)


def _curve_image(points: Sequence[TradeoffPoint], chosen: float, width: int, height: int = 300) -> torch.Tensor:
    """(height, width, 3) uint8: mean error (y) against attention FLOPs saved (x), one dot per knob value."""
    img = torch.full((height, width, 3), 24, dtype=torch.uint8)
    try:
        from PIL import Image, ImageDraw
    except Exception:  # pragma: no cover - PIL ships with ComfyUI
        return img
    pil = Image.fromarray(img.numpy())
    d = ImageDraw.Draw(pil)
    left, right, top, bottom = 60, width - 20, 30, height - 40
    ymax = max([p.mean_error for p in points] + [1e-6]) * 1.1
    xy = [(left + (right - left) * p.saved, bottom - (bottom - top) * p.mean_error / ymax) for p in points]
    d.line([(left, top), (left, bottom), (right, bottom)], fill=(160, 160, 160))
    if len(xy) > 1:
        d.line(sorted(xy), fill=(66, 135, 245), width=2)
    labelled = []
    for (x, y), p in zip(xy, points):
        hit = abs(p.max_error - chosen) < 1e-12
        r = 5 if hit else 3
        d.ellipse([x - r, y - r, x + r, y + r], fill=(245, 166, 35) if hit else (235, 235, 235))
        if hit or all(abs(x - a) + abs(y - b) > 24 for a, b in labelled):  # one label per spot: knobs often coincide
            d.text((x + 6, y - 12), f"{p.max_error:g}", fill=(200, 200, 200))
            labelled.append((x, y))
    d.text((left, 8), "trade-off: mean error of the chosen branches vs attention FLOPs saved "
                      "(labels: max_error; orange: chosen)", fill=(235, 235, 235))
    d.text((left, bottom + 8), "0%", fill=(180, 180, 180))
    d.text((right - 30, bottom + 8), "100%", fill=(180, 180, 180))
    d.text((6, top), f"{ymax:.2f}", fill=(180, 180, 180))
    d.text((6, bottom - 10), "0", fill=(180, 180, 180))
    import numpy as np

    return torch.from_numpy(np.array(pil))


def report_image(decisions: torch.Tensor, points: Sequence[TradeoffPoint], chosen: float,
                 layer_groups: Optional[Sequence[tuple]] = None) -> torch.Tensor:
    """IMAGE [1, H, W, 3]: the calibrated decisions (rows = steps, as the routing preview draws them) above the
    trade-off curve."""
    heat = (render_table(decisions, layer_groups) * 255).round().to(torch.uint8)[0]
    width = max(heat.shape[1], 640)
    if heat.shape[1] < width:
        heat = torch.cat([heat, torch.full((heat.shape[0], width - heat.shape[1], 3), 24, dtype=torch.uint8)], 1)
    curve = _curve_image(points, chosen, width)
    return torch.cat([heat, curve], 0).float().div(255.0).unsqueeze(0)
