"""Convert an official VORTA ``router.pt`` to our ``.safetensors`` format (optional: the loader reads router.pt as it is).

    python custom_nodes/<pack folder>/convert_router.py wan-14B/train/ckpt/step-000100/router.pt \
        models/vorta/wan2.1-t2v-14b.safetensors

(``convert_router.py`` in the pack's folder runs this from any install.)  The training settings come from the
``config.json`` that belongs to the router (``training_config_beside``) or ``--config``, otherwise from the official
settings for the detected family.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .router_files import (RouterFileError, default_training_config, is_safetensors, load_official_checkpoint,
                           read_training_config, save_safetensors, training_config_beside)

_MODEL_NAMES = {("wan", 40, 40, 5120): "wan2.1-t2v-14b", ("wan", 30, 12, 1536): "wan2.1-t2v-1.3b",
                ("hunyuan", 60, 24, 3072): "hunyuanvideo-t2v"}


def _check_paths(src: str, dst: str) -> None:
    """User mistakes on the command line, reported before any work is done."""
    if is_safetensors(src):
        raise RouterFileError(f"{src}: is already a .safetensors router; it loads as it is (put it in "
                              "ComfyUI/models/vorta), convert takes the official router.pt")
    if not is_safetensors(dst):
        raise RouterFileError(f"{dst}: the output must end with .safetensors, e.g. ComfyUI/models/vorta/wan2.1-t2v-14b"
                              ".safetensors")
    if os.path.isdir(dst):
        raise RouterFileError(f"{dst}: is a folder; give the output a file name ending with .safetensors")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise RouterFileError(f"{dst}: the output folder {folder} does not exist; create it first")


def convert(src: str, dst: str, config_path: Optional[str] = None, model: Optional[str] = None) -> str:
    """Convert one official router.pt; returns the one-line summary the command prints."""
    from safetensors import SafetensorError

    _check_paths(src, dst)
    routers = load_official_checkpoint(src)
    config_path = config_path or training_config_beside(src)
    if config_path:
        config, origin = read_training_config(config_path), os.path.basename(config_path)
    else:
        config, preset = default_training_config(routers)
        origin = f"preset {preset}"
    model = model or _MODEL_NAMES.get((routers.family, routers.num_layers, routers.heads, routers.dim), "")
    try:
        save_safetensors(routers, dst, config, model=model,
                         extra={"source": os.path.basename(src), "config_source": origin})
    except (OSError, SafetensorError) as e:  # permissions, disk full, folder removed meanwhile
        why = " ".join(str(e).split())
        raise RouterFileError(f"{dst}: cannot be written ({why}); check the folder and its permissions") from None
    return (f"{dst}: {routers.family} {model or '(unknown size)'}, {routers.num_layers} layers x {routers.heads} heads, "
            f"dim {routers.dim}; tile {config.tile} window {config.window} bucket {config.bucket} "
            f"ratio {config.ratio} (from {origin})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command: exit 0 on success, 2 with one line on stderr for a user mistake; tracebacks only for bugs."""
    ap = argparse.ArgumentParser(prog="convert_router.py", description=__doc__.splitlines()[0])
    ap.add_argument("router_pt", help="official router.pt")
    ap.add_argument("output", help="output .safetensors (put it in ComfyUI/models/vorta)")
    ap.add_argument("--config", help="official config.json with self_attention_kwargs (auto-detected)")
    ap.add_argument("--model", help="model name stored in the metadata (auto-detected from the shapes)")
    args = ap.parse_args(argv)
    try:
        print(convert(args.router_pt, args.output, args.config, args.model))
    except RouterFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
