"""comfy-kitchen's attention, as ComfyUI core calls it, timed in the same run on the same shape as ours.

What core calls (ComfyUI's comfy_extras/nodes_sparse_attention.py, "Model Sparse Attention", and
comfy/ldm/modules/attention.py, "Model Attention Backend" -> comfy kitchen attention), with the node defaults:
* sol-attn: ``ck.sol_attn(q, k, v, tau=1.3, topk_ratio=0.0, token_aug=256)`` on ``(B, S, H, 128)`` (Wan's
  ``[B, S, H*D]`` viewed per head);
* sla: the same call with ``topk_ratio=keep_percent / 100 = 0.10`` (tau ignored);
* INT8 dense: ``ck.int8_attention(q, k, v, scale=None, attn_mask=None)`` on ``[B, H, S, D]`` (core transposes
  the ``[B, S, H, D]`` view, no copy).
Core runs its sparse methods only without an attention mask (HunyuanVideo's padded text goes dense there); here
every call is unmasked over the whole sequence, like the cuDNN baseline, so the rows compare the same work.
The kernels do not report how many key blocks they computed: sol-attn gets no executed TFLOP/s; SLA gets an upper
bound from its budget (top-k blocks + the 3 forced diagonal blocks + token_aug keys per query block)."""
from __future__ import annotations

import math
import sys
from typing import Dict, List, Optional

import torch

from .measure import NAN, Dense, attempt, bench, dense_baseline, dense_flops, rel_l2, report_failure, sdpa_cudnn
from .shapes import HEAD_DIM, Shape

SOL_TAU = 1.3  # core node default (ck.sol_attn's own default is 1.0)
SLA_KEEP = 0.10  # core node default keep_percent 10
TOKEN_AUG = 256  # core node default extra_tokens
BLOCK = 64  # sol-attn's query/key block


def kitchen_version() -> str:
    try:
        from importlib.metadata import version

        return version("comfy-kitchen")
    except Exception as e:
        return f"not installed ({type(e).__name__})"


def _kitchen():
    """comfy_kitchen, or None (printed why)."""
    try:
        import comfy_kitchen

        return comfy_kitchen
    except Exception as e:
        report_failure("import comfy_kitchen (kitchen rows skipped)", e)
        return None


def sla_keys_per_query(seq: int) -> float:
    """Upper bound on the keys an SLA query attends exactly: top-k blocks (ratio of the blocks, as kitchen rounds
    it) + the diagonal +-1 blocks + token_aug tokens, capped at the sequence."""
    n = math.ceil(seq / BLOCK)
    kk = max(0, min(n - 1, max(1, round(SLA_KEEP * n))))
    return min(seq, (kk + 3) * BLOCK + TOKEN_AUG)


def methods(ck) -> Dict[str, tuple]:
    """name -> (callable on (B, S, H, D) q/k/v returning (B, S, H, D), available?, why not)."""
    dev = torch.device("cuda")
    out = {}
    sol_ok = attempt("ck.sol_attn_is_available", lambda: bool(ck.sol_attn_is_available(dev)), False)
    why = "" if sol_ok else "ck.sol_attn_is_available() is False on this GPU"
    out[f"sol-attn tau={SOL_TAU} aug={TOKEN_AUG}"] = (
        lambda q, k, v: ck.sol_attn(q, k, v, tau=SOL_TAU, topk_ratio=0.0, token_aug=TOKEN_AUG), sol_ok, why)
    out[f"SLA top-k {SLA_KEEP:.0%} aug={TOKEN_AUG}"] = (
        lambda q, k, v: ck.sol_attn(q, k, v, tau=SOL_TAU, topk_ratio=SLA_KEEP, token_aug=TOKEN_AUG), sol_ok, why)
    i8_ok = attempt("ck.int8_attention_is_available", lambda: bool(ck.int8_attention_is_available(dev)), False)
    out["INT8 dense (int8_attention)"] = (
        lambda q, k, v: ck.int8_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2),
        i8_ok, "" if i8_ok else "ck.int8_attention_is_available() is False on this GPU")
    return out


def run_kitchen(s: Shape, dev) -> List[Dict]:
    """One row per kitchen method on this shape: ms, speed-up vs cuDNN dense, TFLOP/s where meaningful, error vs
    dense SDPA (relative L2 over every head)."""
    ck = _kitchen()
    if ck is None:
        return []
    B, S, H, D = s.batch, s.seq, s.heads, HEAD_DIM
    dense: Optional[Dense] = dense_baseline(s, dev)
    gen = torch.Generator(device=dev).manual_seed(2)
    q, k, v = (torch.randn(B, S, H, D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3))
    ref = attempt(f"dense reference output {s.name}", lambda: sdpa_cudnn(*(x.transpose(1, 2) for x in (q, k, v)))[0])
    rows = []
    for name, (fn, ok, why) in methods(ck).items():
        row = dict(branch="kitchen", shape=s.name, batch=B, heads=H, seq=S, method=name, dense=dense, ms=NAN,
                   err=NAN, tflops=NAN, tflops_kind="")
        rows.append(row)
        if not ok:
            print(f"  {name}: skipped, {why}", file=sys.stderr, flush=True)
            row["failed"] = why
            continue
        print(f"... kitchen {name} {s.name}", flush=True)
        try:
            o = fn(q, k, v)
            torch.cuda.synchronize()
            row["ok"] = bool(torch.isfinite(o).all())
            if ref is not None:
                row["err"] = rel_l2(o.transpose(1, 2), ref)
            del o
            row["ms"] = bench(lambda: fn(q, k, v))
        except Exception as e:
            row["failed"] = report_failure(f"kitchen {name} {s.name}", e)
            continue
        if name.startswith("INT8"):
            row["tflops"], row["tflops_kind"] = dense_flops(s) / row["ms"] / 1e9, "exec (dense)"
        elif name.startswith("SLA"):
            flops = 4.0 * D * B * H * S * sla_keys_per_query(S)
            row["tflops"], row["tflops_kind"] = flops / row["ms"] / 1e9, "exec <= (budget)"
        else:
            row["tflops"], row["tflops_kind"] = dense_flops(s) / row["ms"] / 1e9, "dense-equiv"
        torch.cuda.empty_cache()
    return rows
