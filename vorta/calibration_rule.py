"""The decision rule of a calibration (one knob, ``max_error``), its trade-off curve, and decisions at any timestep.

Rule: per (timestep, layer, head), the branch with the fewest attention FLOPs among those whose calibrated error
(relative L2 of the attention output against full, ``vorta.calibrate``) is at most ``max_error``; full attention
(error 0) is always allowed, so a head no sparse branch serves well enough stays exact.  A NaN error (nothing
measured) never passes, so unmeasured heads stay full.

Between calibrated timesteps the errors are interpolated linearly in t *in log space* (``log(error + LOG_OFFSET)``,
``errors_at``) and the rule is applied to the result; beyond the calibrated range the nearest calibrated timestep's
errors are used (constant extrapolation). Why errors and not decisions: the errors move smoothly with the noise
level, so interpolating them places each switch between two calibrated steps where the error crosses the budget,
instead of at the midpoint a nearest-step table would choose. Why in log space: where a head changes type its
branch error grows multiplicatively (a softmax tail), from ~0 to tens of percent between two calibrated steps, and a
linear interpolation overestimates it where budgets sit. Measured on planted heads that switch with sigma
(``bench/calibration_transfer_planted.py``, ``bench/results/2026-11-24-calibration-transfer-cpu.md``): at the
switch cells of unseen schedules log interpolation matches a direct calibration on 82-100 %, linear 67-100 %,
nearest step 47-94 %.  The offset keeps exact branches (error 0) finite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch

from .config import BRANCHES, CORESET, FULL, SLIDING
from .routing import AttentionProblem, attention_flops

DEFAULT_BUDGETS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)


def branch_costs(problem: AttentionProblem) -> torch.Tensor:
    """(3,) attention FLOPs of one head per branch (full, coreset, sliding) relative to dense, for this grid."""
    f = attention_flops(problem, 1, [1, 1, 1])
    dense = f["dense"] / 3.0
    return torch.tensor([f[b] / dense for b in BRANCHES], dtype=torch.float64)


def decide(errors: torch.Tensor, costs: torch.Tensor, max_error: float) -> torch.Tensor:
    """(...) int64 branch per head from (..., 3) errors: the cheapest branch within ``max_error``, else full."""
    allowed = errors <= max_error  # NaN -> False
    allowed[..., FULL] = True
    cost = torch.where(allowed, costs.to(errors.device, torch.float64), torch.inf)
    return cost.argmin(dim=-1)


def chosen_error(errors: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
    """(...) calibrated error of the chosen branch (0 for full)."""
    e = errors.gather(-1, decisions.unsqueeze(-1)).squeeze(-1)
    return torch.where(decisions == FULL, torch.zeros_like(e), e)


@dataclass(frozen=True)
class TradeoffPoint:
    """One knob value: attention FLOPs (share of dense) and the error of the chosen branches."""

    max_error: float
    flops: float  # executed / dense attention FLOPs over all (step, layer, head)
    mean_error: float  # mean over (step, layer, head) of the chosen branch's calibrated error
    worst_error: float  # largest chosen error (<= max_error by construction)
    shares: tuple  # (full, coreset, sliding) share of heads

    @property
    def saved(self) -> float:
        return 1.0 - self.flops


def evaluate(errors: torch.Tensor, costs: torch.Tensor, max_error: float) -> TradeoffPoint:
    """The rule at one knob value over a whole (steps, layers, heads, 3) table."""
    d = decide(errors, costs, max_error)
    e = chosen_error(errors, d)
    counts = torch.bincount(d.flatten(), minlength=3).double()
    n = max(1.0, float(counts.sum()))
    flops = float((counts * costs.double()).sum() / n)
    return TradeoffPoint(float(max_error), flops, float(e.mean()) if e.numel() else 0.0,
                         float(e.max()) if e.numel() else 0.0, tuple((counts / n).tolist()))


def tradeoff(errors: torch.Tensor, costs: torch.Tensor, budgets: Sequence[float] = DEFAULT_BUDGETS) -> List[TradeoffPoint]:
    """The trade-off curve: the rule at every knob value in ``budgets``."""
    return [evaluate(errors, costs, b) for b in budgets]


LOG_OFFSET = 1e-3  # errors interpolate as log(error + 1e-3): linear below ~1e-3, logarithmic above


def errors_at(cal_t: torch.Tensor, cal_errors: torch.Tensor, t: torch.Tensor, space: str = "log") -> torch.Tensor:
    """(M, ...) errors at timesteps ``t``, interpolated between the calibrated timesteps ``cal_t`` (N,) with errors
    (N, ...): linearly in t of ``log(error + LOG_OFFSET)`` (``space="log"``, the rule's) or of the error itself
    (``"linear"``, for comparison); exact at a calibrated t, NaN where either neighbour is NaN, constant beyond the
    calibrated range."""
    if space not in ("log", "linear"):
        raise ValueError(f"space must be 'log' or 'linear', got {space!r}")
    order = torch.argsort(cal_t)
    ct, ce = cal_t[order].double(), cal_errors[order].double()
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if ct.numel() == 1:
        return ce[:1].expand(t.numel(), *ce.shape[1:]).clone()
    hi = torch.searchsorted(ct, t.clamp(ct[0], ct[-1]), right=False).clamp(1, ct.numel() - 1)
    lo = hi - 1
    w = ((t.clamp(ct[0], ct[-1]) - ct[lo]) / (ct[hi] - ct[lo])).clamp(0, 1)
    w = w.reshape(-1, *([1] * (ce.ndim - 1)))
    if space == "log":
        ln = torch.log(ce + LOG_OFFSET)
        mixed = torch.exp(ln[lo] * (1 - w) + ln[hi] * w) - LOG_OFFSET
    else:
        mixed = ce[lo] * (1 - w) + ce[hi] * w
    # within the two neighbours (rounding may step a few ulp outside; equal neighbours give their value bit for bit)
    mixed = torch.maximum(torch.minimum(mixed, torch.maximum(ce[lo], ce[hi])), torch.minimum(ce[lo], ce[hi]))
    return torch.where(w == 0, ce[lo], torch.where(w == 1, ce[hi], mixed))  # exact at a calibrated t, NaN or not


__all__ = ["DEFAULT_BUDGETS", "LOG_OFFSET", "branch_costs", "decide", "chosen_error", "TradeoffPoint", "evaluate",
           "tradeoff", "errors_at", "FULL", "CORESET", "SLIDING"]
