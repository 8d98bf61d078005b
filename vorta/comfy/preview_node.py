"""Routing table -> (IMAGE, summary text) for the preview node (no ComfyUI imports)."""
from __future__ import annotations

from typing import Optional

import torch

from ..config import preset_for
from ..geometry import TokenGrid, grid_from_latent
from ..routing import attention_flops
from .preview import render_table, table_summary
from .settings import describe


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
    adapter = holder.adapter
    if latent is not None and latent.ndim == 5:
        grid = grid_from_latent(tuple(latent.shape[2:5]), adapter.patch_size)
        where = "latent"
    else:
        trained = holder.bundle.trained_with if holder.bundle is not None else None
        preset = preset_for(adapter.family, None, adapter.dim)
        grid = TokenGrid(*preset.latent_grid)
        where = f"grid of preset {preset.name}" if trained is None else f"grid of preset {preset.name}"
    problem = holder._problem(grid, 0)
    saved = flops_saved(table, problem)
    c = problem.config
    header = (f"VORTA preview ({adapter.family}, {describe(holder.settings)}): {table.shape[0]} steps x "
              f"{table.shape[1]} layers x {table.shape[2]} heads; FLOPs for the {where} {grid.shape} with tile {c.tile}, "
              f"window {c.window}, bucket {c.bucket}, ratio {c.ratio} (text tokens not counted)")
    image = render_table(table, adapter.layer_groups if len(adapter.layer_groups) > 1 else None)
    return image, table_summary(table, saved, header)
