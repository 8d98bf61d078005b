"""Per-run counters and the one-line end-of-run summary (no ComfyUI imports)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

from ..config import BRANCHES

log = logging.getLogger("vorta")


@dataclass
class RunStats:
    """Head-calls per branch, attention FLOPs (executed vs dense) and dense fallbacks with their reasons."""

    heads: list = field(default_factory=lambda: [0, 0, 0])
    flops: float = 0.0
    dense_flops: float = 0.0
    routed_calls: int = 0
    model_calls: int = 0  # model calls whose self-attention ran
    skipped_calls: int = 0  # model calls that returned without running self-attention (e.g. EasyCache reused an output)
    fallbacks: Dict[str, int] = field(default_factory=dict)
    core_sparse_exact: int = 0  # routed calls whose full heads stepped over core's "Model Sparse Attention"
    core_sparse_kept: int = 0  # calls VORTA did not route, left to core's "Model Sparse Attention"
    backends: set = field(default_factory=set)  # the sparse branch implementations that ran this run ('triton', ...)
    reporters: list = field(default_factory=list)  # objects with reset() and summary() -> str: added to the line
    _logged: set = field(default_factory=set)

    def reset(self) -> None:
        self.heads = [0, 0, 0]
        self.flops = self.dense_flops = 0.0
        self.routed_calls = self.model_calls = self.skipped_calls = 0
        self.fallbacks = {}
        self.core_sparse_exact = self.core_sparse_kept = 0
        self.backends = set()
        for r in self.reporters:
            r.reset()

    def backend_text(self, requested: str) -> str:
        """'backend auto->triton': what ran this run for ``requested`` ('' when no sparse head ran)."""
        return f"backend {requested}->{'/'.join(sorted(self.backends))}" if self.backends else ""

    def add_call(self, heads_per_branch: Sequence[int], flops: Optional[Dict[str, float]], backend: str = "") -> None:
        """A routed call; ``backend`` names the sparse branches' implementation where a sparse head ran."""
        self.routed_calls += 1
        if backend and sum(heads_per_branch[1:]):
            self.backends.add(backend)
        for i, n in enumerate(heads_per_branch):
            self.heads[i] += int(n)
        if flops:
            self.flops += sum(flops[b] for b in BRANCHES)
            self.dense_flops += flops["dense"]

    def add_fallback(self, reason: str, heads: int = 0, dense_flops: float = 0.0) -> None:
        """A self-attention call that ran dense for ``reason``; the reason is logged once per process."""
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        self.heads[0] += int(heads)
        self.flops += dense_flops
        self.dense_flops += dense_flops
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("VORTA: full attention fallback: %s", reason)

    def shares(self):
        total = sum(self.heads)
        return [h / total for h in self.heads] if total else [0.0, 0.0, 0.0]

    def summary(self, prefix: str = "VORTA") -> str:
        if not self.routed_calls and not self.fallbacks:
            return (f"{prefix}: no self-attention call reached VORTA in {self.model_calls + self.skipped_calls} "
                    "model calls (steps skipped by a cache, or another patch replaced the attention blocks)")
        s = self.shares()
        saved = 1.0 - self.flops / self.dense_flops if self.dense_flops else 0.0
        skipped = f" ({self.skipped_calls} more skipped by a cache)" if self.skipped_calls else ""
        line = (f"{prefix}: heads full {s[0]:.0%} / coreset {s[1]:.0%} / sliding {s[2]:.0%} over "
                f"{self.routed_calls} attention calls in {self.model_calls} model calls{skipped}; attention FLOPs "
                f"saved {saved:.0%}")
        if self.fallbacks:
            line += "; dense fallbacks: " + "; ".join(f"{r} (x{n})" for r, n in self.fallbacks.items())
        else:
            line += "; no dense fallbacks"
        if self.core_sparse_exact or self.core_sparse_kept:
            line += (f"; core Model Sparse Attention is chained: VORTA's full heads ran exact on the backend beneath it "
                     f"({self.core_sparse_exact} calls), core kept {self.core_sparse_kept} calls VORTA did not route")
        for r in self.reporters:
            extra = r.summary()
            if extra:
                line += "; " + extra
        return line
