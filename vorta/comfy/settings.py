"""What the Apply VORTA node decided, as plain data, plus the per-step rules that need no ComfyUI.

Nothing here imports ``comfy``: the rules (dense-block lists, the percent window, the training-free schedule,
the preset choice) are unit-tested on their own and used unchanged by the patch in ``patch.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Sequence

import torch

from ..config import CORESET, FULL, PRESETS, SLIDING, VortaConfig, preset_for
from ..geometry import TokenGrid

MODES = ("router", "schedule", "full", "sliding", "coreset")
FORCED = {"full": FULL, "coreset": CORESET, "sliding": SLIDING}
PRESET_CHOICES = ("auto", "custom") + tuple(PRESETS)
BACKENDS = ("auto", "triton", "torch")

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
    """Everything Apply VORTA chose.  ``config`` is None for preset 'auto': resolved per grid at run time."""

    mode: str = "router"
    preset: str = "auto"
    config: Optional[VortaConfig] = None
    tau_sparse: float = 0.3
    start_percent: float = 0.0
    end_percent: float = 1.0
    switch_percent: float = 0.5
    dense_blocks: FrozenSet[int] = field(default_factory=frozenset)
    backend: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown routing mode {self.mode!r}; expected one of {MODES}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown kernel backend {self.backend!r}; expected one of {BACKENDS}")
        for name in ("start_percent", "end_percent", "switch_percent"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.end_percent < self.start_percent:
            raise ValueError(f"end_percent {self.end_percent} is before start_percent {self.start_percent}")


def resolve_config(settings: Settings, family: str, grid: TokenGrid, dim: int,
                   trained_with: Optional[VortaConfig] = None) -> VortaConfig:
    """The sparse settings for one grid: explicit/custom config, else the router's training settings, else
    the preset for the detected model and resolution."""
    if settings.config is not None:
        cfg = settings.config
    elif trained_with is not None and settings.mode == "router":
        cfg = trained_with
    else:
        cfg = preset_for(family, grid.shape, dim).config
    return cfg.with_(tau_sparse=settings.tau_sparse)


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
    """One short line for logs and the preview."""
    parts = [f"mode={settings.mode}"]
    if settings.config is not None:
        c = settings.config
        parts.append(f"tile={c.tile} window={c.window} bucket={c.bucket} ratio={c.ratio}")
    else:
        parts.append(f"preset={settings.preset}")
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
