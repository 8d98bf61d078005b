"""The routing preview: the (step x layer x head) table for a SIGMAS schedule, and its (IMAGE, summary text)."""
from __future__ import annotations

from typing import Optional

import torch

from ..config import preset_for
from ..geometry import TokenGrid, grid_from_latent
from ..router_files import check_fits
from ..routing import attention_flops
from .adapters import CallLayout, detect
from .install import VortaPatch, find_patch
from .plan import RouterBundle
from .heatmap import render_table, table_summary
from .settings import Settings, describe, describe_geometry


def preview_table(model, sigmas: torch.Tensor, settings: Optional[Settings] = None,
                  bundle: Optional[RouterBundle] = None):
    """The (steps, layers, heads) decision table Apply VORTA would use for ``sigmas`` (one row per step, the
    last sigma excluded), computed before sampling from the model's own time MLP through the same
    ``RoutingPlan.decisions_at`` the patch uses.  Settings and router come from a MODEL patched by Apply VORTA
    when present, else from the arguments.  Returns (table, holder)."""
    installed = find_patch(model)
    if installed is not None and settings is None:
        settings, bundle = installed.settings, (bundle or installed.bundle)
    if settings is None:
        settings = Settings()
    settings = settings.resolved(has_router=bundle is not None)
    dm = model.get_model_object("diffusion_model")
    adapter = installed.adapter if installed is not None else detect(dm)
    if settings.mode == "router":
        if bundle is None:
            raise ValueError("the routing preview needs a ROUTER (or a MODEL patched by Apply VORTA in router mode)")
        check_fits(bundle.routers, adapter.family, adapter.num_layers, adapter.heads, adapter.dim,
                   source=f"router {bundle.name}".strip())
    ms = model.get_model_object("model_sampling")
    holder = VortaPatch(adapter, settings, bundle, ms)
    try:
        device = next(adapter.time_mlp(dm).parameters()).device
    except StopIteration:  # pragma: no cover
        device = torch.device("cpu")
    rows = []
    for sigma in sigmas.reshape(-1)[:-1].tolist():
        t = float(ms.timestep(torch.tensor(sigma)))
        rows.append(holder.plan.decisions_at(dm, sigma, t, device).decisions)
    table = torch.stack(rows) if rows else torch.empty(0, adapter.num_layers, adapter.heads, dtype=torch.long)
    return table, holder


def flops_saved(table: torch.Tensor, problem) -> float:
    """1 - executed/dense attention FLOPs over the table for one attention problem."""
    done = dense = 0.0
    for step in table:
        for layer in step:
            counts = torch.bincount(layer.reshape(-1).cpu(), minlength=3).tolist()
            f = attention_flops(problem, 1, counts)
            done += f["full"] + f["coreset"] + f["sliding"]
            dense += f["dense"]
    return 1.0 - done / dense if dense else 0.0


def preview_outputs(table: torch.Tensor, holder, latent: Optional[torch.Tensor] = None):
    """The heat map IMAGE and the summary text; the summary names the mode and the geometry actually used (mode
    and preset 'auto' resolved) for the latent's grid, else for the grid of the model's preset."""
    adapter = holder.adapter
    if latent is not None and latent.ndim == 5:
        grid = grid_from_latent(tuple(latent.shape[2:5]), adapter.patch_size)
        where = "the latent's grid"
    else:
        preset = preset_for(adapter.family, None, adapter.dim)
        grid = TokenGrid(*preset.latent_grid)
        where = f"the grid of preset {preset.name}"
    layout = CallLayout(grid)
    problem = holder.plan.problem_for(layout)
    saved = flops_saved(table, problem)
    header = (f"VORTA preview ({adapter.family}, {describe(holder.settings)}): {table.shape[0]} steps x "
              f"{table.shape[1]} layers x {table.shape[2]} heads\n"
              f"geometry for {where} {grid.shape}: {describe_geometry(holder.plan.geometry_for(layout))}\n"
              f"FLOPs counted for the video tokens (text tokens not counted)")
    image = render_table(table, adapter.layer_groups if len(adapter.layer_groups) > 1 else None)
    return image, table_summary(table, saved, header)
