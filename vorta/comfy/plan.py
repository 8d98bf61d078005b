"""The routing plan of one Apply VORTA output: decisions at a sigma, the attention problem for a token layout.

This is the public API that the patch, the preview, benchmarks and tests share (``decisions_at``,
``problem_for``); it caches per timestep and per layout and holds no per-call state.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ..config import VortaConfig
from ..router import RouterSet, router_input
from ..routing import AttentionProblem, head_groups
from .adapters import CallLayout
from .settings import Geometry, Settings, SigmaWindow, describe_geometry, resolve_geometry, step_decisions


@dataclass
class RouterBundle:
    """What the Router loader outputs: the routers, the settings they were trained with, and where from."""

    routers: RouterSet
    trained_with: VortaConfig
    name: str = ""


@dataclass
class StepState:
    """Decisions of one timestep: per routed layer (and VACE block) the head groups per branch."""

    decisions: torch.Tensor  # (layers, heads) on the CPU
    groups: List[List[torch.Tensor]]  # per layer: [full, coreset, sliding] head indices on the device
    counts: List[List[int]]
    active: bool = True  # inside the start/end window: VORTA decides every head (full heads included)
    vace_groups: Optional[List[torch.Tensor]] = None
    vace_counts: Optional[List[int]] = None


class RoutingPlan:
    """Settings + routers + model family -> per-step decisions and per-layout problems (cached)."""

    def __init__(self, adapter, settings: Settings, bundle: Optional[RouterBundle], model_sampling=None):
        self.adapter = adapter
        self.settings = settings
        self.bundle = bundle
        self.model_sampling = model_sampling
        self.window: Optional[SigmaWindow] = None
        self._steps: Dict[tuple, StepState] = {}
        self._problems: Dict[tuple, AttentionProblem] = {}
        self._routers: Dict[str, RouterSet] = {}
        self.used: Dict[tuple, Geometry] = {}  # grid -> geometry, for the grids this run has routed

    def reset(self, model_sampling=None) -> None:
        """A new sampling run: the window follows that run's model_sampling; cached steps are dropped."""
        self._steps.clear()
        self.used.clear()
        ms = model_sampling if model_sampling is not None else self.model_sampling
        self.window = None if ms is None else SigmaWindow.from_percents(ms.percent_to_sigma, self.settings)

    def sigma_window(self) -> SigmaWindow:
        if self.window is None:
            ms = self.model_sampling
            to_sigma = ms.percent_to_sigma if ms is not None else (lambda p: 1.0 - p)  # flow: sigma 1 -> 0
            self.window = SigmaWindow.from_percents(to_sigma, self.settings)
        return self.window

    def geometry_for(self, layout: CallLayout) -> Geometry:
        """The sparse geometry for this layout's grid and where it comes from (preset 'auto' resolved)."""
        trained = self.bundle.trained_with if self.bundle is not None else None
        return resolve_geometry(self.settings, self.adapter.family, layout.grid, self.adapter.dim, trained)

    def geometry_text(self) -> str:
        """The geometries this run used, one per grid, e.g. 'grid (21, 45, 80) preset wan2.1-14b-720p: tile 5x9x8 ...'."""
        return "; ".join(f"grid {shape} {describe_geometry(g)}" for shape, g in self.used.items())

    def problem_for(self, layout: CallLayout) -> AttentionProblem:
        """The attention problem (grid, sparse settings, text tokens and their order) for a token layout."""
        key = (layout.grid.shape, layout.text_len, layout.text_first)
        p = self._problems.get(key)
        if p is None:
            p = AttentionProblem(layout.grid, self.geometry_for(layout).config, kv_from=self.adapter.kv_from,
                                 text_len=layout.text_len, text_first=layout.text_first)
            self._problems[key] = p
        if layout.grid.shape not in self.used:
            self.used[layout.grid.shape] = self.geometry_for(layout)
        return p

    def decisions_at(self, dm, sigma: float, t: float, device=None) -> StepState:
        """Every layer's head groups at this sigma (model timestep ``t``), from the model's own time MLP."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        key = (round(float(t), 4), str(device))
        st = self._steps.get(key)
        if st is not None:
            return st
        a, s = self.adapter, self.settings
        window = self.sigma_window()
        active = window.active(sigma)
        router_dec = None
        if s.mode == "router" and active:
            routers = self._router_on(device)
            with torch.no_grad():
                router_dec = routers.decide(self.router_input(dm, t, device), s.tau_sparse)
        dec = step_decisions(s, window, sigma, a.num_layers, a.heads, router_dec)
        groups = [head_groups(dec[i], device) for i in range(a.num_layers)]
        counts = [[int(g.numel()) for g in gs] for gs in groups]
        vace_groups = vace_counts = None
        if a.vace_layers:
            # VACE blocks have no released routers: in router mode they stay dense; schedule/forced modes apply
            vs = dataclasses.replace(s, mode="full") if s.mode == "router" else s
            vdec = step_decisions(vs, window, sigma, 1, a.heads, None)[0]
            vace_groups = head_groups(vdec, device)
            vace_counts = [int(g.numel()) for g in vace_groups]
        st = StepState(dec, groups, counts, active, vace_groups, vace_counts)
        self._steps[key] = st
        return st

    def router_input(self, dm, t: float, device) -> torch.Tensor:
        """The tensor the routers read at model timestep ``t`` (see ``vorta.router.router_input``)."""
        mlp = self.adapter.time_mlp(dm)
        return router_input(self.adapter.family, mlp, torch.tensor([t], dtype=torch.float32, device=device))

    def _router_on(self, device) -> RouterSet:
        key = str(device)
        r = self._routers.get(key)
        if r is None:
            r = self.bundle.routers.to(device)
            self._routers[key] = r
        return r

