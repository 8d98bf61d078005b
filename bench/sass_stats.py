"""Static look at the sliding kernel as compiled for the H100 (sm_90), without a GPU: registers, spill stack and shared
memory per config, and the instruction mix of each inner loop that holds tensor-core instructions.

    python bench/sass_stats.py                                  # the rule's configs at Wan's 360- and 192-token tiles
    python bench/sass_stats.py --tile 4,6,8 --config 64,64,4,3 --quant

Why: the device is lent for minutes; what a loop executes per key block (CTA barriers, shuffles, layout conversions
through shared memory, spill loads) can be read here first.  Triton compiles for a target it is told
(``GPUTarget("cuda", 90, 32)``), its cubin is disassembled with the ``cuobjdump`` Triton ships.  Counts are per loop
body as laid out in SASS (software-pipelined copies of a loop show as separate loops)."""
from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import tempfile
from collections import Counter
from typing import Dict, List, Tuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

KEEP = ("HGMMA", "IGMMA", "QGMMA", "MUFU", "BAR", "SHFL", "PRMT", "LDS", "STS", "LDL", "STL", "F2FP")
MMA = ("HGMMA", "IGMMA", "QGMMA")


def _signature(kernel, const: Dict[str, object], quant: bool, block_n: int, tail_n: int) -> Dict[str, str]:
    kt, vt = ("i8", "fp8e4nv") if quant else ("bf16", "bf16")
    v_desc = (lambda n: f"tensordesc<{vt}[128,{n}]>") if quant else (lambda n: f"tensordesc<{vt}[{n},128]>")
    ptrs = dict(Q="*bf16", KT="*" + kt, VT="*" + vt, KT_DESC=f"tensordesc<{kt}[{block_n},128]>",
                VT_DESC=v_desc(block_n), KT_TAIL=f"tensordesc<{kt}[{tail_n},128]>", VT_TAIL=v_desc(tail_n), O="*bf16",
                HEADS="*i32", TILE_START="*i32", TEXT_VALID="*i32", WS_ACC="*fp32", WS_M="*fp32", WS_L="*fp32",
                SK="*fp32", VS="*fp32")
    params = inspect.signature(kernel.fn).parameters
    return {p: "constexpr" if p in const else ptrs.get(p, "fp32" if p == "qk_scale" else "i32") for p in params}


def compile_sm90(tile: Tuple[int, int, int], config: Tuple[int, int, int, int], tail_n: int, quant: bool):
    """The sliding kernel's video-query variant for ``tile`` and ``config`` (BLOCK_M, BLOCK_N, warps, stages), TMA."""
    from comfyui_vorta.vorta.kernels.sliding_launch import scale_scores
    from comfyui_vorta.vorta.kernels.sliding_tile import sliding_tile_fwd_kernel as kernel

    bm, bn, warps, stages = config
    tokens = tile[0] * tile[1] * tile[2]
    const = dict(TF=tile[0], TH=tile[1], TW=tile[2], RF=1, RH=1, RW=1, ROW_LO=0, ROWS=tokens - tokens % bm or tokens,
                 HAS_TEXT=False, HAS_TEXT_VALID=False, TEXT_QUERIES=False, BLOCK_M=bm, BLOCK_N=bn, TAIL_N=tail_n,
                 HEAD_DIM=128, USE_TMA=True, QUANT=quant, FP8_DOT=True,
                 SCALE_SCORES=scale_scores(bm, quant))  # as the launcher picks
    sig = _signature(kernel, const, quant, bn, tail_n)
    return triton.compile(ASTSource(kernel, sig, constexprs=const), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps, num_stages=stages))


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def sass_report(cubin: bytes) -> Tuple[str, List[Tuple[int, Counter]]]:
    """(resource line, [(instructions, counts of KEEP ops)] per loop that holds tensor-core instructions)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
        sass = subprocess.run([_cuobjdump(), "-sass", fh.name], capture_output=True, text=True).stdout
    res = next((ln.strip() for ln in usage.splitlines() if "REG:" in ln), "?")
    lines = [ln for ln in sass.splitlines() if re.search(r"/\*[0-9a-f]+\*/\s+\S", ln)]
    addr = [int(re.search(r"/\*([0-9a-f]+)\*/", ln).group(1), 16) for ln in lines]
    where = {a: i for i, a in enumerate(addr)}
    ops = [re.sub(r"^@!?U?P\w+\s+", "", ln.split("*/", 1)[1].strip()).split() for ln in lines]
    ops = [o[0] if o else "" for o in ops]
    loops = []
    for i, op in enumerate(ops):
        target = re.search(r"0x([0-9a-f]+)", lines[i].split("BRA", 1)[1]) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < addr[i] and int(target.group(1), 16) in where:
            body = ops[where[int(target.group(1), 16)]:i + 1]
            counts = Counter(o.split(".")[0] for o in body if o.split(".")[0] in KEEP)
            if any(counts[m] for m in MMA):
                loops.append((len(body), counts))
    return res, loops


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tile", action="append", help="F,H,W (repeatable; default 5,9,8 and 4,6,8)")
    ap.add_argument("--config", action="append", help="BM,BN,warps,stages (default: the rule's pick per tile)")
    ap.add_argument("--tail", type=int, default=64, help="TAIL_N (keys per block of a segment's tail)")
    ap.add_argument("--quant", action="store_true", help="the 8-bit path (INT8 Q.K, FP8 P.V)")
    args = ap.parse_args(argv)
    from comfyui_vorta.vorta.kernels.sliding_launch import _rule_config

    for tile_text in args.tile or ["5,9,8", "4,6,8"]:
        tile = tuple(int(x) for x in tile_text.split(","))
        tokens = tile[0] * tile[1] * tile[2]
        rule = _rule_config(tokens, 3 * tokens, True)
        configs = [tuple(int(x) for x in c.split(",")) for c in args.config or []] or [rule[:4]]
        for config in configs:
            c = compile_sm90(tile, config, args.tail, args.quant)
            res, loops = sass_report(c.asm["cubin"])
            print(f"tile {tile_text} ({tokens}) config {config} tail {args.tail}{' 8-bit' if args.quant else ''}: {res}")
            for n, counts in loops:
                print(f"  loop of {n} instructions: " + ", ".join(f"{k} {counts[k]}" for k in KEEP if counts[k]))


if __name__ == "__main__":
    main()
