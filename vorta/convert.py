"""Convert an official VORTA ``router.pt`` to our ``.safetensors`` format.

    python -m comfyui_vorta.vorta.convert results/wan-14B/train/ckpt/step-000100/router.pt wan14b.safetensors

The training settings come from ``config.json`` next to the official ``train/`` folder when it is found
(or ``--config``), otherwise from the official settings for the detected family.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .router_files import (RouterFileError, default_training_config, load_official_checkpoint, read_training_config,
                           save_safetensors)

_MODEL_NAMES = {("wan", 40, 40, 5120): "wan2.1-t2v-14b", ("wan", 30, 12, 1536): "wan2.1-t2v-1.3b",
                ("hunyuan", 60, 24, 3072): "hunyuanvideo-t2v"}


def _find_config(router_path: str) -> Optional[str]:
    """The official layout is <exp>/train/config.json with <exp>/train/ckpt/step-N/router.pt."""
    d = os.path.dirname(os.path.abspath(router_path))
    for _ in range(3):
        cand = os.path.join(d, "config.json")
        if os.path.isfile(cand):
            return cand
        d = os.path.dirname(d)
    return None


def convert(src: str, dst: str, config_path: Optional[str] = None, model: Optional[str] = None) -> str:
    routers = load_official_checkpoint(src)
    config_path = config_path or _find_config(src)
    if config_path:
        config, origin = read_training_config(config_path), os.path.basename(config_path)
    else:
        config, preset = default_training_config(routers)
        origin = f"preset {preset}"
    model = model or _MODEL_NAMES.get((routers.family, routers.num_layers, routers.heads, routers.dim), "")
    save_safetensors(routers, dst, config, model=model,
                     extra={"source": os.path.basename(src), "config_source": origin})
    return (f"{dst}: {routers.family} {model or '(unknown size)'}, {routers.num_layers} layers x {routers.heads} heads, "
            f"dim {routers.dim}; tile {config.tile} window {config.window} bucket {config.bucket} "
            f"ratio {config.ratio} (from {origin})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m comfyui_vorta.vorta.convert", description=__doc__.splitlines()[0])
    ap.add_argument("router_pt", help="official router.pt")
    ap.add_argument("output", help="output .safetensors (put it in ComfyUI/models/vorta)")
    ap.add_argument("--config", help="official config.json with self_attention_kwargs (auto-detected)")
    ap.add_argument("--model", help="model name stored in the metadata (auto-detected from the shapes)")
    args = ap.parse_args(argv)
    if not args.output.endswith(".safetensors"):
        ap.error("output must end with .safetensors")
    try:
        print(convert(args.router_pt, args.output, args.config, args.model))
    except RouterFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
