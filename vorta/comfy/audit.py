"""Apply VORTA's optional audit: the measured error of the branches a run actually chose, in the run summary.

For ``heads`` (layer, head) pairs per timestep -- drawn with a seeded generator from the timestep, so each step
audits other heads and a rerun audits the same ones -- full attention is computed for a sample of query tiles
(``vorta.calibrate.output_errors``) and compared with the output the run produced for that head, whatever chose
its branch: an official router, a calibrated one, the schedule or a forced mode.  The metric is the calibration's
(relative L2 of the head's attention output against full attention).  Cost: ``heads`` head-rows of full
attention on ``fraction`` of the queries per step; the sampled trajectory itself is unchanged.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List

import torch

from ..calibrate import DEFAULT_FRACTION, output_errors, relative_error
from ..config import BRANCHES
from ..routing import as_bshd
from .override import STATE, TAG, check_call, ours


class Audit:
    """Wraps a VortaPatch's attention override; collects per-branch errors of audited heads; reports them."""

    def __init__(self, holder, heads: int, fraction: float = DEFAULT_FRACTION, seed: int = 0):
        self.holder, self.heads, self.fraction, self.seed = holder, int(heads), float(fraction), int(seed)
        self._picks: Dict[float, Dict[int, List[int]]] = {}
        self.reset()

    def reset(self) -> None:
        self.errors: Dict[int, List[float]] = {b: [] for b in range(len(BRANCHES))}
        self.records: List[tuple] = []  # (t, layer, head, branch, error) per audited head and call
        self.skipped = 0

    def picks(self, t: float) -> Dict[int, List[int]]:
        """layer -> heads audited at model timestep ``t``."""
        key = round(float(t), 4)
        got = self._picks.get(key)
        if got is None:
            a = self.holder.adapter
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(round(key * 16)))
            idx = torch.randperm(a.num_layers * a.heads, generator=g)[: self.heads].tolist()
            got = {}
            for i in sorted(idx):
                got.setdefault(i // a.heads, []).append(i % a.heads)
            self._picks[key] = got
        return got

    def install(self) -> None:
        inner = self.holder.attention

        @torch.compiler.disable
        def attention(func, *args, **kwargs):
            out = inner(func, *args, **kwargs)
            try:
                self.observe(args, kwargs, out)
            except Exception:  # an audit must never break sampling
                self.skipped += 1
            return out

        self.holder.attention = ours(attention)
        self.holder.stats.reporters.append(self)

    @torch.no_grad()
    def observe(self, args, kwargs, out) -> None:
        opts = kwargs.get("transformer_options") or {}
        tag, state = opts.get(TAG), opts.get(STATE)
        if tag is None or tag[0] == "vace" or state is None or state.step is None or state.problem is None:
            return
        layer = tag[1] if tag[0] != "single" else self.holder.adapter.double + tag[1]
        heads = self.picks(state.t).get(layer)
        if not heads:
            return
        q, k, v = args[0], args[1], args[2]
        n = kwargs.get("heads", args[3] if len(args) > 3 else None)
        reason, layout, text_valid = check_call(q, k, v, n, kwargs, opts, state)
        if reason is not None:
            self.skipped += 1
            return
        problem = state.problem if text_valid is None else dataclasses.replace(state.problem, text_valid=text_valid)
        qs, ks, vs = (as_bshd(x, layout, n) for x in (q, k, v))
        err, ref = output_errors(qs, ks, vs, as_bshd(out, "wan", n), problem, heads, self.fraction,
                                 salt=layer * 7919 + int(round(state.t * 16)))
        rel = relative_error(err, ref).cpu().tolist()
        chosen = state.step.decisions[layer].tolist()  # FULL outside the start/end window too
        for h, e in zip(heads, rel):
            self.errors[int(chosen[h])].append(float(e))
            self.records.append((float(state.t), layer, h, int(chosen[h]), float(e)))

    def summary(self) -> str:
        parts = []
        for b, name in enumerate(BRANCHES):
            e = self.errors[b]
            if e:
                finite = [x for x in e if math.isfinite(x)]
                mean = sum(finite) / len(finite) if finite else math.nan
                parts.append(f"{name} mean {mean:.3f} max {max(e):.3f} (n={len(e)})")
        if not parts:
            return "audit: nothing measured" if self.heads else ""
        text = (f"audit ({self.heads} (layer, head) per step, {self.fraction:.1%} of query tiles): error vs full "
                "attention of the chosen branch: " + ", ".join(parts))
        return text + (f"; {self.skipped} audited calls skipped" if self.skipped else "")


def enable_audit(model, heads: int, fraction: float = DEFAULT_FRACTION) -> Audit:
    """Audit the VortaPatch on a MODEL from Apply VORTA (``heads`` (layer, head) pairs per step)."""
    from .install import find_patch

    holder = find_patch(model)
    if holder is None:
        raise ValueError("the audit needs a MODEL patched by Apply VORTA")
    audit = Audit(holder, heads, fraction)
    audit.install()
    return audit


__all__ = ["Audit", "enable_audit"]
