"""Pooling of per-call branch errors into one calibration: per timestep, layer and head.

Routing depends only on the timestep, so every call at the same model timestep ``t`` -- cond and uncond of CFG
(one batched call or two), every latent of the batch, every prompt -- adds to the same (t, layer) sums, and the
calibrated error is the pooled relative L2 ``sqrt(sum err_sq / sum ref_sq)`` (``vorta.calibrate``).  Samplers
that evaluate the model between the schedule's sigmas (Heun, DPM++ 2S, ...) add timesteps of their own: they are
kept as data points, since a router answers any t.  Sums stay on the device (no synchronisation per call) until
``result``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch

from .calibrate import CallErrors, relative_error


@dataclass
class Calibration:
    """Measured errors, sorted by falling t (sampling order): ``errors[i, layer, head, branch]`` (full 0; NaN where
    a layer was never measured at that t, which the decision rule sends to full attention)."""

    t: torch.Tensor  # (N,) model timesteps (sigma * 1000 for flow models)
    sigma: torch.Tensor  # (N,)
    errors: torch.Tensor  # (N, layers, heads, 3) fp64 relative L2
    calls: torch.Tensor  # (N, layers) attention calls measured
    rows: int = 0  # query rows measured per head, summed over calls and batch elements
    skipped: Dict[str, int] = field(default_factory=dict)  # calls not measured, by reason

    @property
    def steps(self) -> int:
        return int(self.t.numel())

    @property
    def layers(self) -> int:
        return int(self.errors.shape[1])

    @property
    def heads(self) -> int:
        return int(self.errors.shape[2])


class CalibrationTable:
    """Accumulates ``CallErrors`` by (t, layer)."""

    def __init__(self, layers: int, heads: int):
        self.layers, self.heads = layers, heads
        self._err: Dict[float, torch.Tensor] = {}  # t -> (layers, 3, H) fp64
        self._ref: Dict[float, torch.Tensor] = {}  # t -> (layers, H) fp64
        self._calls: Dict[float, List[int]] = {}
        self._sigma: Dict[float, float] = {}
        self._t: Dict[float, float] = {}
        self.rows = 0
        self.skipped: Dict[str, int] = {}

    @staticmethod
    def key(t: float) -> float:
        return round(float(t), 4)

    def add(self, t: float, sigma: float, layer: int, e: CallErrors) -> None:
        k = self.key(t)
        if k not in self._err:
            self._err[k] = torch.zeros(self.layers, 3, self.heads, dtype=torch.float64, device=e.err_sq.device)
            self._ref[k] = torch.zeros(self.layers, self.heads, dtype=torch.float64, device=e.err_sq.device)
            self._calls[k] = [0] * self.layers
            self._sigma[k], self._t[k] = float(sigma), float(t)
        self._err[k][layer] += e.err_sq
        self._ref[k][layer] += e.ref_sq
        self._calls[k][layer] += 1
        self.rows += e.rows

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def __len__(self) -> int:
        return len(self._err)

    def result(self) -> Calibration:
        keys = sorted(self._err, reverse=True)
        if not keys:
            raise ValueError("calibration measured no self-attention call: the sampler never ran the model on a "
                             "video grid VORTA can route (see the skipped calls in the report)")
        errs, calls = [], []
        for k in keys:
            rel = relative_error(self._err[k].cpu(), self._ref[k].cpu())  # (layers, 3, H)
            n = torch.tensor(self._calls[k])
            rel[n == 0] = float("nan")
            rel[:, 0] = torch.where(n[:, None] > 0, 0.0, float("nan"))
            errs.append(rel.transpose(1, 2))
            calls.append(n)
        return Calibration(torch.tensor([self._t[k] for k in keys], dtype=torch.float64),
                           torch.tensor([self._sigma[k] for k in keys], dtype=torch.float64),
                           torch.stack(errs), torch.stack(calls), self.rows, dict(self.skipped))

