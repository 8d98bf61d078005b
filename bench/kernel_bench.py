"""Kernel benchmark: the sparse branches against same-run baselines, on the shapes users run (GPU only).

    python bench/kernel_bench.py [--only sliding,coreset,kitchen] [--shapes 0,5b,Hunyuan] [--quick] [--no-flex]
                                 [--precision bf16,8bit] [--md results.md] [--no-autotune]
    python bench/kernel_bench.py --consumer [--shapes ...]      # RTX 40/50 launch configs, forced here
    python bench/kernel_bench.py --sweep '128,64,8,3;64,64,4,3' # hand-picked launch configs
    python bench/kernel_bench.py --list                         # the shapes (no GPU needed)

Per shape (bf16, head dim 128; ``bench/kbench/shapes.py``) each branch is checked against the PyTorch reference
first (two heads at full size), then timed (median of CUDA-event timed runs after warm-up):
* sliding: ours; cuDNN dense forced (``sdpa_kernel([CUDNN_ATTENTION])``) on the same shape, and ours' efficiency
  relative to it; FlexAttention with the equivalent block mask (permutes included); the PyTorch reference;
* coreset: ours; the ideal (cuDNN dense on the pooled length); the reference; cuDNN dense on the whole sequence;
* kitchen: comfy-kitchen's Sol-Attn, SLA top-k and INT8 dense attention as ComfyUI core calls them.
Tables are printed last (and rewritten into ``--md`` after every shape, so a run cut short keeps what it did).
The sliding kernel's launch config is measured per problem on its first call (``vorta/kernels/autotune.py``; the
correctness check is that call, so the timed runs use the choice); the choice per shape is printed and listed under
the tables.  ``--no-autotune`` (``VORTA_AUTOTUNE=0``) runs the fixed rule's config instead, for before/after.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/kbench, also when imported by the tests

from kbench import shapes as shape_list  # noqa: E402

PARTS = ("sliding", "coreset", "kitchen")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python bench/kernel_bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run: {', '.join(PARTS)}")
    ap.add_argument("--shapes", help="comma-separated indices into the shape list or name substrings (--list)")
    ap.add_argument("--precision", default="bf16", help="comma-separated branch precisions, e.g. bf16,8bit "
                    "(unknown ones are skipped with a note)")
    ap.add_argument("--quick", action="store_true", help="skip the slow reference timings")
    ap.add_argument("--no-flex", action="store_true", help="skip the FlexAttention baseline (compiles per shape)")
    ap.add_argument("--md", help="write the header and tables to this markdown file")
    ap.add_argument("--consumer", action="store_true",
                    help="force every launch config an RTX 40/50 card would get, check and time each")
    ap.add_argument("--sweep", help="sliding kernel configs to force, check and time: "
                    "'BM,BN,warps,stages[,tma[,tail_n[,row_split]]];...'")
    ap.add_argument("--no-autotune", action="store_true", help="launch the sliding kernel with the fixed rule's "
                    "config (VORTA_AUTOTUNE=0), not the one measured per shape on its first call")
    ap.add_argument("--list", action="store_true", help="print the shape list and exit")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        ap.error(f"--only: unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    args.precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    try:
        args.shape_list = shape_list.select(args.shapes)
    except ValueError as e:
        ap.error(f"--shapes: {e}")
    return args


def known_precisions(requested: List[str]) -> List[str]:
    """The requested precisions the branches have a path for; the others are skipped with a printed note."""
    from kbench.branches import UnknownPrecision, branch_runners

    out = []
    for p in requested:
        try:
            branch_runners(p)
            out.append(p)
        except UnknownPrecision as e:
            print(f"note: precision {p} skipped: {e}", flush=True)
    return out


def tuner_lines(seen: set, shape_name: str) -> List[str]:
    """One line per launch config the sliding kernel's autotuner chose since ``seen`` (its keys; updated)."""
    from comfyui_vorta.vorta.kernels import autotune

    out = []
    for key, t in autotune.chosen().items():
        if key in seen:
            continue
        seen.add(key)
        vs = f"{t.rule_ms:.3f} ms" if t.rule_ms is not None else ("did not run" if t.source == "measured" else "?")
        ms = f"{t.ms:.3f} ms" if t.ms is not None else "?"
        out.append(f"{shape_name} (B*heads~{key[-2]}{', 8-bit' if key[-1] else ''}): {autotune.short(t.config)} "
                   f"{ms}; rule {autotune.short(t.rule)} {vs} ({t.source}, {t.tried} candidates, "
                   f"{t.skipped} skipped)")
    return out


def write(args, head: str, rows: List[Dict], note: str = "", tuned: List[str] = ()) -> str:
    from kbench.tables import document

    text = document(head, rows, args.shape_list, note)
    if tuned:
        text += ("\nSliding launch configs chosen by the autotuner (first call per shape; config = BLOCK_M, BLOCK_N, "
                 "warps, stages[, tma, tail block]; ms: median of 3 runs while tuning):\n\n"
                 + "\n".join(f"- {x}" for x in tuned) + "\n")
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for i, s in enumerate(shape_list.SHAPES):
            tile = shape_list.preset_tile(s)
            check = "synthetic" if tile is None else ("preset tile" if tile == s.tile else f"PRESET SAYS {tile}")
            print(f"{i:2d}  {shape_list.describe(s)}  [{check}]")
        return 0
    if args.no_autotune:
        os.environ["VORTA_AUTOTUNE"] = "0"
    import torch

    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    from kbench.measure import attempt
    from kbench.tables import header

    for s in args.shape_list:  # the table must say when a model shape no longer has its preset's tile
        tile = attempt(f"preset tile of {s.name}", lambda: shape_list.preset_tile(s))
        if tile is not None and tile != s.tile:
            print(f"WARNING: {s.name} runs tile {s.tile}, preset 'auto' resolves {tile}", flush=True)
    precisions = known_precisions(args.precisions)
    dev = torch.device("cuda")
    head = header(sys.argv if argv is None else ["bench/kernel_bench.py"] + list(argv))
    rows: List[Dict] = []
    tuned: List[str] = []  # the autotuner's choices, one line per shape and precision
    seen: set = set()
    if args.consumer or args.sweep:
        from kbench.branches import branch_runners
        from kbench.configs import consumer_configs, parse_sweep, run_configs

        fixed = parse_sweep(args.sweep) if args.sweep else None
        for i, s in enumerate(args.shape_list):
            for p in precisions:
                configs = fixed if fixed is not None else consumer_configs(s)
                rows += attempt(f"launch configs on {s.name}", lambda: run_configs(s, dev, configs, p,
                                                                                     branch_runners(p)[0]), [])
            write(args, head, rows, f"(partial: {i + 1} of {len(args.shape_list)} shapes)")
    else:
        from kbench.branches import rows_for
        from kbench.kitchen import run_kitchen

        if args.no_autotune:
            print("autotune off (--no-autotune): the sliding kernel runs the fixed rule's launch config", flush=True)
        for i, s in enumerate(args.shape_list):
            rows += rows_for(s, dev, args.parts, precisions, args.quick, not args.no_flex)
            for line in tuner_lines(seen, s.name):
                print(f"autotune: {line}", flush=True)
                tuned.append(line)
            if "kitchen" in args.parts and s.model is not None:
                rows += attempt(f"kitchen rows of {s.name}", lambda: run_kitchen(s, dev), [])
            torch.cuda.empty_cache()
            write(args, head, rows, f"(partial: {i + 1} of {len(args.shape_list)} shapes)", tuned)
    print(write(args, head, rows, tuned=tuned))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
