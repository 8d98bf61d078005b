"""The markdown the benchmark prints last and writes with ``--md``: a header saying what ran where, one table per
branch, and under each the definitions and the issue-15 targets it is read against."""
from __future__ import annotations

import datetime
import math
import platform
import shlex
import subprocess
import sys
from typing import Dict, List, Optional

SLIDING_TFLOPS_TARGET = 450.0
SLIDING_EFF_TARGET = 0.8  # our executed TFLOP/s over cuDNN's dense TFLOP/s
CORESET_IDEAL_TARGET = 1.1  # our ms over cuDNN dense on the pooled length


def f(x, spec: str = ".2f", missing: str = "–") -> str:
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def tile_text(t) -> str:
    return f"{'x'.join(map(str, t))} ({math.prod(t)})"


def _dense_cells(d, flops: float) -> str:
    if d is None:
        return "failed"
    mark = "" if d.backend == "cuDNN" else " †"
    return f"{d.ms:.1f} ms, {d.tflops(flops):.0f} TFLOP/s{mark}"


def _failed(r: Dict) -> Optional[str]:
    return f"FAILED: {r['failed'][:120].replace('|', '/')}" if r.get("failed") else None


def sliding_table(rows: List[Dict], shapes: Dict) -> List[str]:
    from .measure import dense_flops

    out = ["| sliding tile | B | tile (tokens) | heads | S | prec | ours ms (median of 3, range) | exec TFLOP/s | "
           "cuDNN dense | eff. vs cuDNN | targets | vs Flex (tiled) | vs torch ref | rel err | flex err |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = shapes[r["shape"]]
        lead = f"| {r['shape']} | {s.batch} | {tile_text(s.tile)} | {s.heads} | {s.seq} | {r['precision']} |"
        if _failed(r):
            out.append(f"{lead} {_failed(r)} |" + " |" * 8)
            continue
        d = r.get("dense")
        dflops = dense_flops(s)
        eff = r["tflops"] / d.tflops(dflops) if d else float("nan")
        met = (r["tflops"] >= SLIDING_TFLOPS_TARGET) + (eff >= SLIDING_EFF_TARGET)
        out.append(f"{lead} {r['ms']:.2f} ({r['spread'][0]:.2f}–{r['spread'][1]:.2f}) | {r['tflops']:.0f} | "
                   f"{_dense_cells(d, dflops)} | {f(eff)}x | {met}/2 | {f(r['flex'] / r['ms'])}x ({f(r['flex'], '.1f')} ms) | "
                   f"{f(r['ref'] / r['ms'], '.1f')}x | {r['err']:.2e}{'' if r['ok'] else ' NONFINITE'} | {f(r['flex_err'], '.1e')} |")
    out += ["", f"exec TFLOP/s: computed (query, key) pairs of the video queries (window 3x3x3 tiles + valid text) x 4·D, "
            f"over B·H.  cuDNN dense: SDPA forced to cuDNN on the same (B, H, S), 4·D·B·H·S² (†: cuDNN could not run, "
            f"PyTorch's default SDPA instead).  eff. = exec TFLOP/s / cuDNN TFLOP/s.  targets (issue 15): exec >= "
            f"{SLIDING_TFLOPS_TARGET:.0f} TFLOP/s and eff. >= {SLIDING_EFF_TARGET}x, count met.  vs X: X's ms / ours.  "
            f"rel err: relative L2 against vorta.reference on heads 0 and H-1."]
    return out


def coreset_table(rows: List[Dict], shapes: Dict) -> List[str]:
    from .measure import dense_flops

    out = ["| coreset | B | heads | S (pooled + valid text) | prec | ours ms (select+attn+unpool) | exec TFLOP/s | "
           "ideal: cuDNN on pooled | ours / ideal | target | vs torch ref | cuDNN dense full | speed-up vs dense | rel err |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = shapes[r["shape"]]
        n = r.get("pooled", 0) + s.valid_text
        lead = f"| {r['shape']} | {s.batch} | {s.heads} | {s.seq} ({n}) | {r['precision']} |"
        if _failed(r):
            out.append(f"{lead} {_failed(r)} |" + " |" * 8)
            continue
        ideal, dense = r.get("ideal"), r.get("dense")
        ratio = r["ms"] / ideal.ms if ideal else float("nan")
        ok = "met" if ratio <= CORESET_IDEAL_TARGET else ("–" if math.isnan(ratio) else "missed")
        out.append(f"{lead} {r['ms']:.2f} | {r['tflops']:.0f} | {_dense_cells(ideal, dense_flops(s, n))} | "
                   f"{f(ratio, '.3f')} | {ok} | {f(r['ref'] / r['ms'])}x ({f(r['ref'], '.1f')} ms) | "
                   f"{_dense_cells(dense, dense_flops(s))} | {f(dense.ms / r['ms'] if dense else None)}x | "
                   f"{r['err']:.2e}{'' if r['ok'] else ' NONFINITE'} |")
    out += ["", f"ideal: SDPA forced to cuDNN on the pooled length (kept video tokens + valid text), what the branch "
            f"would cost with free select/pool/unpool; target (issue 15): ours / ideal <= {CORESET_IDEAL_TARGET}.  "
            f"exec TFLOP/s: 4·D·B·H·(pooled + valid text)² over ours.  rel err: against vorta.reference on heads 0, H-1."]
    return out


def kitchen_table(rows: List[Dict], shapes: Dict) -> List[str]:
    from .measure import dense_flops

    out = ["| comfy-kitchen | B | heads | S | cuDNN dense | method | ms | speed-up vs cuDNN | TFLOP/s (kind) | "
           "rel L2 vs dense |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = shapes[r["shape"]]
        d = r.get("dense")
        lead = f"| {r['shape']} | {s.batch} | {s.heads} | {s.seq} | {_dense_cells(d, dense_flops(s))} | {r['method']} |"
        if _failed(r):
            out.append(f"{lead} {_failed(r)} |" + " |" * 3)
            continue
        out.append(f"{lead} {r['ms']:.2f} | {f(d.ms / r['ms'] if d else None)}x | {f(r['tflops'], '.0f')} "
                   f"({r['tflops_kind']}) | {r['err']:.2e}{'' if r.get('ok', True) else ' NONFINITE'} |")
    from .kitchen import SLA_KEEP, SOL_TAU, TOKEN_AUG

    out += ["", f"Called as ComfyUI core calls them, with its nodes' defaults: Model Sparse Attention "
            f"(ck.sol_attn, tau {SOL_TAU}; SLA: topk_ratio {SLA_KEEP}; extra_tokens/token_aug {TOKEN_AUG}) on "
            f"[B, S, H, 128]; Model Attention Backend 'comfy kitchen attention' (ck.int8_attention) on the [B, H, S, D] "
            f"view.  Unmasked over the whole sequence like the cuDNN row (core runs its sparse methods only without a "
            f"mask).  TFLOP/s kinds: exec (dense) = 4·D·B·H·S² (INT8 computes every pair); dense-equiv = the same "
            f"count over a sparse kernel's time (Sol-Attn does not report how many blocks it computed, so no executed "
            f"rate); exec <= (budget) = SLA's kept-key budget per query (top-k + 3 diagonal blocks + token_aug), an "
            f"upper bound.  Inputs are random: the errors show what each method drops on such data, not its quality "
            f"on a model's activations (Sol-Attn's routing, and so its speed, depends on the data)."]
    return out


def config_table(rows: List[Dict]) -> List[str]:
    from .configs import CONSUMER_SMEM

    out = ["| launch config | tile (tokens) | for | BM,BN,warps,stages,tma,tail_n,row_split | prec | smem est. | "
           f"smem compiled | fits {CONSUMER_SMEM} | ms | exec TFLOP/s | rel err | finite |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fits = "–" if r["shared"] is None else ("yes" if r["shared"] <= CONSUMER_SMEM else "NO")
        lead = (f"| {r['shape']} | {tile_text(r['tile'])} | {r['target']} | {r['config']} | {r['precision']} | "
                f"{r['est']} | {f(r['shared'], 'd')} | {fits} |")
        if _failed(r):
            out.append(f"{lead} {_failed(r)} |" + " |" * 3)
            continue
        out.append(f"{lead} {r['ms']:.2f} | {r['tflops']:.0f} | {r['err']:.2e} | {'yes' if r['ok'] else 'NO'} |")
    out += ["", "Each config forced through VORTA_STA_CONFIG on this GPU and checked against vorta.reference (heads 0 "
            "and H-1; finite: every output).  smem est.: the launcher's estimate; smem compiled: the most shared memory "
            "of the kernels Triton compiled for it here (this GPU's instructions: a consumer card's compile can differ). "
            "Times rank the configs on this GPU; they are not a consumer card's times."]
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "n/a"
    except Exception:
        return "n/a"


def header(argv: List[str]) -> str:
    import torch
    import triton

    from .kitchen import kitchen_version

    dev = torch.cuda.get_device_properties(0)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "n/a"
    return (f"{datetime.date.today()} | {dev.name} (sm_{dev.major}{dev.minor}, {dev.multi_processor_count} SMs) | "
            f"torch {torch.__version__} | triton {triton.__version__} | comfy-kitchen {kitchen_version()} | cuDNN {cudnn} | "
            f"python {platform.python_version()} | commit {_git_commit()} | D=128, window 3x3x3 tiles\n\n"
            f"command: `{' '.join(shlex.quote(a) for a in [sys.executable.rsplit('/', 1)[-1]] + argv)}`")


def document(head: str, rows: List[Dict], shapes: List, note: str = "") -> str:
    by_name = {s.name: s for s in shapes}
    parts = [head] + ([note] if note else [])
    for branch, make in (("sliding", sliding_table), ("coreset", coreset_table), ("kitchen", kitchen_table)):
        sel = [r for r in rows if r["branch"] == branch]
        if sel:
            parts.append("\n".join(make(sel, by_name)))
    sel = [r for r in rows if r["branch"] == "config"]
    if sel:
        parts.append("\n".join(config_table(sel)))
    return "\n\n".join(parts) + "\n"
