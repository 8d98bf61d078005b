"""The one declaration of every VORTA setting: name, default, range and tooltip (no ComfyUI imports).

The node inputs (``nodes/``), ``build_settings``, the ``Settings`` defaults and range checks, the example workflows
(``tools/build_workflows.py``), the README's settings table and the tests are all derived from ``APPLY``,
``GEOMETRY`` and ``CALIBRATE`` below; nothing else spells a default.  ``APPLY`` are the inputs of Apply VORTA (what
people change); ``GEOMETRY`` are those of the optional VORTA Settings node, whose output plugs into Apply VORTA;
``CALIBRATE`` are the widgets of VORTA Calibrate Router (its sparse geometry is ``GEOMETRY``'s).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from ..calibrate import DEFAULT_FRACTION
from ..config import PRESETS, VortaConfig
from ..kernels import BACKENDS as KERNEL_BACKENDS
from ..router import OFFICIAL_TAU_SPARSE

MODES = ("auto", "router", "schedule", "full", "sliding", "coreset")
PRESET_CHOICES = ("auto", "custom") + tuple(PRESETS)
# the kernel backends offered in Apply VORTA: all but the 8-bit path (opt-in through the engine: slower on the H100,
# bench/results/2026-11-24-quant-h100.md)
BACKENDS = tuple(b for b in KERNEL_BACKENDS if b != "triton-8bit")
_GEOMETRY_DEFAULT = VortaConfig()  # the official Wan2.1-14B training geometry, shown for preset 'custom'


@dataclass(frozen=True)
class SettingSpec:
    """One input: ``kind`` is 'combo', 'int', 'float', 'bool' or 'text'; ``options`` for combos;
    ``low``/``high``/``step`` for numbers; ``control_after_generate`` for a seed (the editor adds its
    fixed/increment/randomize widget after it)."""

    name: str
    kind: str
    default: object
    tooltip: str
    options: Tuple[str, ...] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    control_after_generate: bool = False

    def check(self, value: object) -> None:
        """Raise ValueError naming the setting when ``value`` is outside what the input allows."""
        if self.kind == "combo" and value not in self.options:
            raise ValueError(f"{self.name}: {value!r} is not one of {', '.join(self.options)}")
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.name} must be a number, got {value!r}")
            if self.kind == "int" and int(value) != value:
                raise ValueError(f"{self.name} must be a whole number, got {value!r}")
            if not self.low <= value <= self.high:
                raise ValueError(f"{self.name} must be in [{self.low}, {self.high}], got {value}")
        if self.kind == "text" and not isinstance(value, str):
            raise ValueError(f"{self.name} must be text, got {value!r}")
        if self.kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{self.name} must be true or false, got {value!r}")


def _triple(prefix: str, label: str, values, high: int, what: str):
    return tuple(SettingSpec(f"{prefix}_{axis}", "int", int(v), f"{label} along {long} ({what}). Used when preset = "
                             "custom.", low=1, high=high, step=1)
                 for axis, long, v in zip("thw", ("frames", "height", "width"), values))


APPLY: Tuple[SettingSpec, ...] = (
    SettingSpec("mode", "combo", "auto", options=MODES, tooltip=(
        "auto: the learned router when a ROUTER is connected, else the schedule. router: learned per-head routing "
        "(needs a ROUTER). schedule: training-free, for models without routers: full attention before start_percent, "
        "coreset in the early high-noise steps, sliding tile after switch_percent (VORTA Settings). full / sliding / "
        "coreset: force one branch for every head (comparison).")),
    SettingSpec("start_percent", "float", 0.0, low=0.0, high=1.0, step=0.01, tooltip=(
        "Sampling progress where sparse attention starts; steps before it run full attention (converted through the "
        "model's own sigma schedule).")),
    SettingSpec("end_percent", "float", 1.0, low=0.0, high=1.0, step=0.01, tooltip=(
        "Sampling progress where sparse attention ends; steps after it run full attention.")),
    SettingSpec("dense_blocks", "text", "", tooltip=(
        "Blocks that always use full attention, e.g. '0,1,38-39'. HunyuanVideo counts double blocks first, then "
        "single blocks (single j = 20 + j for the 13B model).")),
    SettingSpec("backend", "combo", "auto", options=BACKENDS, tooltip=(
        "Sparse-branch kernels: auto (Triton on CUDA GPUs, else PyTorch), triton (error if unavailable), torch "
        "(reference, slow; for checking).")),
    SettingSpec("audit_heads", "int", 0, low=0, high=256, step=1, tooltip=(
        "Quality check: per step, this many (layer, head) pairs also compute full attention on 1/8 of the queries; "
        "the run summary reports the measured error of the branch each took. 0 = off.")),
)

GEOMETRY: Tuple[SettingSpec, ...] = (
    SettingSpec("preset", "combo", "auto", options=PRESET_CHOICES, tooltip=(
        "auto: the router's training settings, else the preset for the detected model and resolution. custom: the "
        "tile/window/bucket/ratio inputs below. Or a named preset.")),
    *_triple("tile", "Sliding tile size in tokens", _GEOMETRY_DEFAULT.tile, 64, "latent frames / patches"),
    *_triple("window", "Sliding window in tiles", _GEOMETRY_DEFAULT.window, 31, "odd numbers are centred"),
    *_triple("bucket", "Coreset bucket size in tokens", _GEOMETRY_DEFAULT.bucket, 16, "one center is always kept"),
    SettingSpec("ratio", "float", _GEOMETRY_DEFAULT.ratio, low=0.0, high=0.95, step=0.05, tooltip=(
        "Coreset: share of each bucket pruned (0.5 keeps the center and half of the rest). Used when preset = "
        "custom.")),
    SettingSpec("tau_sparse", "float", OFFICIAL_TAU_SPARSE, low=0.0, high=1.0, step=0.01, tooltip=(
        "Router mode: a head whose top branch probability is below this uses full attention (0.3 = official "
        "default, never fires; raise above 0.34 for more full heads).")),
    SettingSpec("switch_percent", "float", 0.5, low=0.0, high=1.0, step=0.01, tooltip=(
        "Schedule mode: coreset attention before this point (high noise), sliding tile after it.")),
)

_SHARED_GEOMETRY = tuple(s for s in GEOMETRY if s.name not in ("tau_sparse", "switch_percent"))

CALIBRATE: Tuple[SettingSpec, ...] = (
    SettingSpec("cfg", "float", 5.0, low=0.0, high=100.0, step=0.1, tooltip="CFG scale, as in your workflow."),
    SettingSpec("noise_seed", "int", 0, low=0, high=0xFFFFFFFFFFFFFFFF, step=1, control_after_generate=True,
                tooltip="Seed of the initial noise."),
    SettingSpec("add_noise", "bool", True, tooltip=(
        "Off for the second expert of a two-expert model (it continues the first expert's latent, like "
        "KSamplerAdvanced).")),
    SettingSpec("max_error", "float", 0.2, low=0.0, high=2.0, step=0.01, tooltip=(
        "The one knob: per step, layer and head the cheapest branch whose measured error (relative L2 of the "
        "attention output vs full attention) is at most this; full attention otherwise. Lower = closer to the "
        "original, higher = faster. The report shows speed vs error for other values.")),
    SettingSpec("filename", "text", "calibrated/vorta_router", tooltip=(
        "Name under models/vorta ('.safetensors' is added). An existing file is never overwritten: a number is "
        "appended.")),
    replace(_SHARED_GEOMETRY[0], tooltip=(
        "Sparse settings the router is calibrated for (stored in the file; Apply VORTA uses them): auto = the preset "
        "for the detected model and resolution, custom = the tile/window/bucket/ratio inputs below, or a named "
        "preset.")),
    *_SHARED_GEOMETRY[1:],
    SettingSpec("sample_fraction", "float", DEFAULT_FRACTION, low=0.01, high=1.0, step=0.005, tooltip=(
        "Share of query tiles measured per attention call (more = more precise errors, slower; at 1/8 a calibrated "
        "step took 1.3-1.4x a dense step on an H100).")),
)

SPECS: Dict[str, SettingSpec] = {s.name: s for s in APPLY + GEOMETRY}
DEFAULTS: Dict[str, object] = {s.name: s.default for s in APPLY + GEOMETRY}
