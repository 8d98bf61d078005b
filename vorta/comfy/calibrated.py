"""Apply VORTA with a calibrated router: check it on the running model, and say when it is used outside the sigma
range it was calibrated on (the other expert of a two-expert model)."""
from __future__ import annotations

import logging
from typing import Optional

from ..calibration_file import CalibrationInfo, check_reproduces
from ..router_files import RouterFileError

log = logging.getLogger("vorta")


def _device(module):
    try:
        return next(module.parameters()).device
    except StopIteration:  # pragma: no cover
        return None


def check_calibrated(bundle, adapter, dm) -> Optional[CalibrationInfo]:
    """The calibration a ROUTER records (None for official routers), after checking that on this model the routers
    reproduce the decisions it recorded (``RouterFileError`` when they mostly do not: another model's file)."""
    source = f"router {bundle.name}".strip()
    info = CalibrationInfo.from_metadata(bundle.routers.metadata, adapter.num_layers, adapter.heads, source=source)
    if info is None:
        return None
    mlp = adapter.time_mlp(dm)
    try:
        share = check_reproduces(bundle.routers, info, adapter.family, mlp, source=source, device=_device(mlp))
    except RouterFileError:
        raise
    except Exception as e:  # weights ComfyUI has not materialised yet, exotic storage: sampling will tell
        log.warning("VORTA: could not check %s on this model before sampling (%s: %s)", source, type(e).__name__, e)
        return info
    if share < 0.99:
        log.warning("VORTA: %s reproduces %.1f%% of its calibrated decisions on this model (calibrated on %s); "
                    "calibrate this model for its own router", source, 100 * share, info.model or "another model")
    return info


class SigmaRangeNote:
    """Counts the timesteps a run routes outside the calibrated sigma range of an expert's router (summary)."""

    def __init__(self, info: CalibrationInfo):
        self.lo, self.hi, self.expert = info.sigma_min, info.sigma_max, info.expert
        self.inside, self.outside = set(), set()

    def observe(self, sigma: float) -> None:
        tol = 1e-3 * max(abs(sigma), 1e-3)
        out = sigma > self.hi + tol or sigma < self.lo - tol
        (self.outside if out else self.inside).add(round(float(sigma), 6))

    def reset(self) -> None:
        self.inside, self.outside = set(), set()

    def summary(self) -> str:
        if not self.outside:
            return ""
        n = len(self.inside) + len(self.outside)
        return (f"calibrated router ({self.expert} part of the schedule, sigma {self.lo:.4g}-{self.hi:.4g}) ran "
                f"{len(self.outside)} of {n} steps outside that range, extrapolating the nearest calibrated step "
                "(the other expert's router?)")


def watch_sigma_range(holder, info: CalibrationInfo) -> None:
    """Report steps outside an expert router's calibrated range in the run summary.  A router calibrated on a whole
    schedule is left alone: its first and last steps on other schedules fall just outside, by design."""
    if info.expert == "all":
        return
    note = SigmaRangeNote(info)
    decisions_at = holder.plan.decisions_at

    def observed(dm, sigma, t, device=None):
        note.observe(float(sigma))
        return decisions_at(dm, sigma, t, device)

    holder.plan.decisions_at = observed
    holder.stats.reporters.append(note)
