"""Fit the official router form (SiLU -> Linear on the model's own time embedding -> softmax) to a calibration.

Why a fitted router and not a new file type: the result then loads, validates and routes through exactly the code
the released routers use (``router_files``, ``RoutingPlan``, the preview), and answers every timestep a sampler
can ask for.  The router input depends only on t, so the decisions wanted at *every* t are known in advance:
the calibrated steps' own decisions, and between them the rule applied to interpolated errors (log scale, linear
in t: ``calibration_rule.errors_at``).  We fit on a dense grid of t: for Wan every integer 0..1000, which is every
input the router can ever see (the official input truncates t to an integer, ``vorta.timestep``); for HunyuanVideo
t is a float and the grid is 0.5 apart.

Fit: least squares of the logits to ``margin * (one_hot - 1/3)`` over the grid, in the span of the features
``[silu(router_input(t)), 1]`` (solved in its M x M Gram form, M = grid points), truncated at a relative singular
value ``rcond``.  The most regularised ``rcond`` that reproduces every calibrated step's decisions wins (large
``rcond`` = small weights = decisions that survive an fp8 time MLP or TF32 matmuls); rows that still disagree are
weighted up and the fit repeated.  ``FitReport`` says how many decisions the final router reproduces, checked through
``RouterSet.probabilities`` itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .router import NUM_BRANCHES, RouterSet
from .timestep import router_input

RCONDS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6)
MARGIN = 6.0  # logit gap the targets ask for: the chosen branch gets probability ~0.995


def time_grid(family: str) -> torch.Tensor:
    """Every timestep the fit must answer: Wan integers 0..1000 (all the router can see), HunyuanVideo 0.5 apart."""
    if family == "wan":
        return torch.arange(0, 1001, dtype=torch.float64)
    return torch.linspace(0.0, 1000.0, 2001, dtype=torch.float64)


def router_features(family: str, time_mlp: nn.Module, t: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(M, dim) fp64 on the CPU: ``silu`` of the router input at each t, computed where the time MLP lives with the
    same function sampling uses (``vorta.timestep.router_input``)."""
    try:
        device = next(time_mlp.parameters()).device
    except StopIteration:  # pragma: no cover
        device = torch.device("cpu")
    out = []
    for s in range(0, t.numel(), chunk):
        x = router_input(family, time_mlp, t[s:s + chunk].to(device=device, dtype=torch.float32))
        out.append(F.silu(x.float()).double().cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class FitReport:
    grid_agreement: float  # share of (t, layer, head) decisions on the grid the router reproduces
    calibrated_agreement: float  # the same on the calibrated timesteps only (1.0 expected)
    rcond: float
    rank: int
    max_weight: float

    def describe(self) -> str:
        return (f"fitted router reproduces {self.calibrated_agreement:.2%} of the calibrated decisions and "
                f"{self.grid_agreement:.2%} of the interpolated ones over the timestep grid (rank {self.rank}, "
                f"rcond {self.rcond:g}, largest weight {self.max_weight:.3g})")


def _eig(K: torch.Tensor, sw: torch.Tensor):
    """Eigen-decomposition of the row-weighted Gram matrix ``diag(sw) K diag(sw)``."""
    return torch.linalg.eigh(sw[:, None] * K * sw[None, :])


def _solve(K: torch.Tensor, eig, sw: torch.Tensor, T: torch.Tensor, rcond: float):
    """Dual least squares with row weights ``sw**2``: coefficients alpha (M, O) with W = X1w^T alpha, and the
    predictions ``K diag(sw) alpha`` on the grid (K = X1 X1^T, unweighted)."""
    lam, U = eig
    keep = lam > lam.max() * rcond * rcond
    Ur, lr = U[:, keep], lam[keep]
    alpha = Ur @ ((Ur.T @ (sw[:, None] * T)) / lr[:, None])
    return alpha, K @ (sw[:, None] * alpha), int(keep.sum())


def _agree(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M,) share of (layer, head) decisions per grid row that the predicted logits reproduce."""
    M = targets.shape[0]
    return (pred.view(M, -1, NUM_BRANCHES).argmax(-1) == targets.reshape(M, -1)).double().mean(1)


def fit_routers(family: str, layer_names: Sequence[str], features: torch.Tensor, targets: torch.Tensor,
                anchors: torch.Tensor, margin: float = MARGIN, rounds: int = 4,
                metadata: Optional[dict] = None) -> tuple:
    """Routers whose hard decisions on the grid rows of ``features`` (M, dim) are ``targets`` (M, layers, heads).

    ``anchors`` (M,) bool marks the calibrated timesteps, which must be reproduced.  Returns (RouterSet in fp32,
    FitReport)."""
    M, dim = features.shape
    _, layers, heads = targets.shape
    X1 = torch.cat([features.double(), torch.ones(M, 1, dtype=torch.float64)], 1)
    K = X1 @ X1.T
    T = (F.one_hot(targets.long(), NUM_BRANCHES).double() - 1.0 / NUM_BRANCHES).mul(margin).reshape(M, -1)
    w = torch.ones(M, dtype=torch.float64)
    w[anchors] = 4.0
    best = None
    for _ in range(max(1, rounds)):
        sw = w.sqrt()
        eig = _eig(K, sw)
        for rcond in RCONDS:
            alpha, pred, rank = _solve(K, eig, sw, T, rcond)
            agree = _agree(pred, targets)
            score = (float(agree[anchors].mean()) if anchors.any() else 1.0, float(agree.mean()))
            if best is None or score > best[0]:
                best = (score, alpha, sw, rcond, rank, agree)
            if score[0] == 1.0 and score[1] >= 0.999:
                break
        (score, alpha, sw, rcond, rank, agree) = best
        if score[0] == 1.0:
            break
        w = torch.where(agree < 1.0, w * 10.0, w)
    (_, alpha, sw, rcond, rank, _) = best
    W1 = (sw[:, None] * X1).T @ alpha  # (dim + 1, O)
    weight = W1[:dim].T.reshape(layers, heads * NUM_BRANCHES, dim).float().contiguous()
    bias = W1[dim].reshape(layers, heads * NUM_BRANCHES).float().contiguous()
    routers = RouterSet(family, list(layer_names), weight, bias, dict(metadata or {}))
    got = decisions_on(routers, features)
    ok = (got == targets).double().reshape(M, -1).mean(1)
    report = FitReport(float(ok.mean()), float(ok[anchors].mean()) if anchors.any() else 1.0, rcond, rank,
                       float(weight.abs().max()))
    return routers, report


def decisions_on(routers: RouterSet, features: torch.Tensor) -> torch.Tensor:
    """(M, layers, heads) top-1 decisions of ``routers`` for precomputed features ``silu(router input)``, through
    the same ops as ``RouterSet.probabilities`` (one F.linear per layer in the weights' dtype)."""
    x = features.to(routers.weight.dtype)
    logits = torch.stack([F.linear(x, w, b) for w, b in zip(routers.weight, routers.bias)])  # (layers, M, H*3)
    return logits.unflatten(-1, (routers.heads, NUM_BRANCHES)).argmax(-1).transpose(0, 1)


def grid_targets(family: str, cal_t: torch.Tensor, cal_errors: torch.Tensor, costs: torch.Tensor,
                 max_error: float):
    """(grid t, targets (M, layers, heads), anchors (M,)) for ``fit_routers``: the rule on interpolated errors at
    every grid timestep, and at the calibrated timesteps their own decisions.  For Wan a calibrated t shares the
    router input of its integer part (``unipc_timestep``), so its decisions replace that grid row; for
    HunyuanVideo the calibrated timesteps are added as rows of their own."""
    from .calibration_rule import decide, errors_at

    grid = time_grid(family)
    cal_t = cal_t.double()
    cal_dec = decide(cal_errors, costs, max_error)
    if family == "wan":
        targets = decide(errors_at(cal_t, cal_errors, grid), costs, max_error)
        rows = cal_t.trunc().long().clamp(0, grid.numel() - 1)
        order = torch.argsort(cal_t)  # two calibrated t with one integer part: the larger t wins, consistently
        targets[rows[order]] = cal_dec[order]
        anchors = torch.zeros(grid.numel(), dtype=torch.bool)
        anchors[rows] = True
        return grid, targets, anchors
    grid = torch.cat([grid, cal_t])
    targets = decide(errors_at(cal_t, cal_errors, grid), costs, max_error)
    targets[-cal_t.numel():] = cal_dec
    anchors = torch.zeros(grid.numel(), dtype=torch.bool)
    anchors[-cal_t.numel():] = True
    return grid, targets, anchors
