"""Node input values -> Settings (pure; used by the nodes and their unit tests)."""
from __future__ import annotations

from ..config import PRESETS, VortaConfig
from .settings import Settings, parse_dense_blocks


def build_settings(mode="router", preset="auto", tile_t=5, tile_h=9, tile_w=8, window_t=3, window_h=3, window_w=3,
                   bucket_t=2, bucket_h=3, bucket_w=2, ratio=0.5, tau_sparse=0.3, start_percent=0.0, end_percent=1.0,
                   switch_percent=0.5, dense_blocks="", backend="auto") -> Settings:
    if preset == "custom":
        config = VortaConfig(tile=(tile_t, tile_h, tile_w), window=(window_t, window_h, window_w),
                             bucket=(bucket_t, bucket_h, bucket_w), ratio=float(ratio), tau_sparse=float(tau_sparse))
    elif preset == "auto":
        config = None
    elif preset in PRESETS:
        config = PRESETS[preset].config.with_(tau_sparse=float(tau_sparse))
    else:
        raise ValueError(f"unknown preset {preset!r}; expected auto, custom or one of {sorted(PRESETS)}")
    return Settings(mode=mode, preset=preset, config=config, tau_sparse=float(tau_sparse),
                    start_percent=float(start_percent), end_percent=float(end_percent),
                    switch_percent=float(switch_percent), dense_blocks=parse_dense_blocks(dense_blocks), backend=backend)
