"""What the Apply VORTA node decided, as plain data, plus the per-step rules that need no ComfyUI.

Nothing here imports ``comfy``: the rules (dense-block lists, the percent window, the training-free schedule,
the preset choice) are unit-tested on their own and used unchanged by the patch (``install.py``, ``plan.py``).
Defaults and ranges come from ``setting_specs``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import FrozenSet, NamedTuple, Optional, Sequence

import torch

from ..config import CORESET, FULL, SLIDING, VortaConfig, preset_for
from ..geometry import TokenGrid
from .setting_specs import DEFAULTS, SPECS

FORCED = {"full": FULL, "coreset": CORESET, "sliding": SLIDING}

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_dense_blocks(text: str, num_layers: Optional[int] = None) -> FrozenSet[int]:
    """``"0,1,38-39"`` -> {0, 1, 38, 39}.  Empty text -> no dense blocks.  Raises ValueError with the bad part
    named, and (when ``num_layers`` is known) for indices beyond the model."""
    out = set()
    for part in (text or "").replace(";", ",").split(","):
        if not part.strip():
            continue
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"dense blocks: cannot read {part.strip()!r}; use indices and ranges like '0,1,38-39'")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"dense blocks: range {part.strip()!r} runs backwards")
        out.update(range(lo, hi + 1))
    if num_layers is not None:
        bad = sorted(i for i in out if i >= num_layers)
        if bad:
            raise ValueError(f"dense blocks {bad} do not exist: the model has {num_layers} routed layers (0..{num_layers - 1})")
    return frozenset(out)


@dataclass(frozen=True)
class Settings:
    """Everything Apply VORTA chose.  ``config`` is None for preset 'auto': resolved per grid at run time.
    Mode 'auto' is resolved by ``resolved`` when the node knows whether a router is connected."""

    mode: str = DEFAULTS["mode"]
    preset: str = DEFAULTS["preset"]
    config: Optional[VortaConfig] = None
    tau_sparse: float = DEFAULTS["tau_sparse"]
    start_percent: float = DEFAULTS["start_percent"]
    end_percent: float = DEFAULTS["end_percent"]
    switch_percent: float = DEFAULTS["switch_percent"]
    dense_blocks: FrozenSet[int] = field(default_factory=frozenset)
    backend: str = DEFAULTS["backend"]
    auto_mode: bool = False  # mode was 'auto' before ``resolved`` chose it (the summary says so)

    def __post_init__(self):
        for name in ("mode", "preset", "backend", "tau_sparse", "start_percent", "end_percent", "switch_percent"):
            SPECS[name].check(getattr(self, name))
        if self.end_percent < self.start_percent:
            raise ValueError(f"end_percent {self.end_percent} is before start_percent {self.start_percent}")

    def resolved(self, has_router: bool) -> "Settings":
        """Mode 'auto' made concrete: the learned router when one is connected, else the training-free schedule."""
        if self.mode != "auto":
            return self
        return dataclasses.replace(self, mode="router" if has_router else "schedule", auto_mode=True)


class Geometry(NamedTuple):
    """The sparse geometry used for one grid and where it came from (for the run summary and the preview)."""

    config: VortaConfig
    source: str  # 'custom', 'preset <name>' or 'router training settings'


def resolve_geometry(settings: Settings, family: str, grid: TokenGrid, dim: int,
                   trained_with: Optional[VortaConfig] = None) -> Geometry:
    """The sparse geometry for one grid: a custom or named preset, else (preset 'auto') the router's training
    settings in router mode, else the preset for the detected model and resolution."""
    if settings.config is not None:
        return Geometry(settings.config, "custom" if settings.preset == "custom" else f"preset {settings.preset}")
    if trained_with is not None and settings.mode == "router":
        return Geometry(trained_with, "router training settings")
    preset = preset_for(family, grid.shape, dim)
    return Geometry(preset.config, f"preset {preset.name}")


def describe_geometry(g: Geometry) -> str:
    """'preset wan2.1-1.3b-480p: tile 4x6x8 window 3x3x3 bucket 2x3x2 ratio 0.5'"""
    return f"{g.source}: {describe_config(g.config)}"


def describe_config(c: VortaConfig) -> str:
    """'tile 4x6x8 window 3x3x3 bucket 2x3x2 ratio 0.5'"""
    return f"tile {_x(c.tile)} window {_x(c.window)} bucket {_x(c.bucket)} ratio {c.ratio:g}"


def _x(t: Sequence[int]) -> str:
    return "x".join(str(v) for v in t)


@dataclass(frozen=True)
class SigmaWindow:
    """The percent inputs converted through the model's own sigma schedule (sigma falls during sampling)."""

    start: float  # sigma at start_percent: steps with a larger sigma are dense
    end: float  # sigma at end_percent: steps with a smaller sigma are dense
    switch: float  # schedule mode: coreset while sigma > switch, sliding after
    end_is_last: bool = True  # end_percent >= 1: never dense at the end

    @classmethod
    def from_percents(cls, percent_to_sigma, settings: Settings) -> "SigmaWindow":
        return cls(float(percent_to_sigma(settings.start_percent)), float(percent_to_sigma(settings.end_percent)),
                   float(percent_to_sigma(settings.switch_percent)), settings.end_percent >= 1.0)

    def active(self, sigma: float) -> bool:
        tol = 1e-6 * max(1.0, abs(sigma))
        if sigma > self.start + tol:
            return False
        return self.end_is_last or sigma > self.end + tol


def step_branch(settings: Settings, window: SigmaWindow, sigma: float) -> Optional[int]:
    """The one branch every (non-dense) head takes at this sigma, or None when the router decides."""
    if not window.active(sigma):
        return FULL
    if settings.mode == "router":
        return None
    if settings.mode == "schedule":
        return CORESET if sigma > window.switch + 1e-6 * max(1.0, abs(sigma)) else SLIDING
    return FORCED[settings.mode]


def step_decisions(settings: Settings, window: SigmaWindow, sigma: float, num_layers: int, heads: int,
                   router_decisions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(layers, heads) int64 branch per head at this sigma: percent window, schedule/forced mode or router,
    then the dense-block list."""
    branch = step_branch(settings, window, sigma)
    if branch is None:
        if router_decisions is None:
            raise ValueError("routing mode 'router' needs router decisions")
        d = router_decisions.detach().to("cpu", torch.long).clone()
    else:
        d = torch.full((num_layers, heads), branch, dtype=torch.long)
    for i in settings.dense_blocks:
        if i < num_layers:
            d[i] = FULL
    return d


def describe(settings: Settings) -> str:
    """One short line for logs and the preview (the geometry actually used is added by the caller)."""
    parts = [f"mode=auto->{settings.mode}" if settings.auto_mode else f"mode={settings.mode}",
             f"preset={settings.preset}"]
    if settings.mode == "router":
        parts.append(f"tau_sparse={settings.tau_sparse}")
    if settings.start_percent > 0 or settings.end_percent < 1:
        parts.append(f"active {settings.start_percent:.2f}-{settings.end_percent:.2f}")
    if settings.mode == "schedule":
        parts.append(f"switch={settings.switch_percent:.2f}")
    if settings.dense_blocks:
        parts.append(f"dense blocks={format_blocks(settings.dense_blocks)}")
    return " ".join(parts)


def format_blocks(blocks: Sequence[int]) -> str:
    """{0,1,2,5} -> '0-2,5' (inverse of parse_dense_blocks)."""
    s = sorted(set(blocks))
    out, i = [], 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(out)
