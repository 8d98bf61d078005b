"""Seeded fuzz cases for the engine: random problems run through the Triton kernels, the PyTorch reference and
the brute force, with NaN/inf inputs, exact ties, text before or after the video, and every sliding load path
forced through ``VORTA_STA_CONFIG``.  Used by ``tests/test_fuzz.py`` (small, CPU interpreter) and
``bench/fuzz_device.py`` (many cases, GPU).

A case passes when no NaN/inf crosses a (batch element, head) boundary, head by head the kernels' output is
non-finite exactly where the reference's is (the definition on the CPU for our Triton math; on a GPU, for the
parts that are PyTorch SDPA there, the reference run on the GPU: see ``judge``) and close to the definition where
finite, the reference matches the brute force (small cases), and an unsupported head dim is refused with a clear
error.  Seeds come from ``random.Random(seed)`` / ``torch.Generator`` only."""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid
from comfyui_vorta.vorta.routing import REFERENCE_BRANCHES, AttentionProblem, Branches, routed_attention

from brute_force import coreset_brute, masked_attention, sliding_mask, with_text_mask
from poison import guarded, poisoned_empty

# BLOCK_M, BLOCK_N, warps, stages, TMA, tail block (0: BLOCK_N), row split
CPU_CONFIGS = [(32, 32, 4, 1, 0, 16, 1), (32, 32, 4, 1, 1, 16, 1), (16, 16, 4, 1, 1, 0, 1), (32, 16, 4, 1, 0, 0, 0),
               (16, 32, 4, 1, 1, 16, 0), (32, 32, 4, 1, 1, 0, 1)]
GPU_CONFIGS = [None, (128, 128, 8, 3, 1, 16, 1), (128, 128, 8, 3, 1, 64, 1), (128, 128, 8, 3, 1, 0, 0),
               (128, 64, 8, 3, 1, 0, 1), (64, 64, 4, 3, 1, 16, 1), (64, 128, 4, 3, 1, 32, 1),
               (128, 64, 8, 3, 0, 0, 1), (64, 64, 4, 3, 0, 0, 0), (32, 32, 4, 2, 0, 16, 1), (32, 32, 4, 2, 1, 16, 0)]
# Kernel shapes (tile, window) are drawn from short lists: every new one costs a compile on a GPU.
TILES = [(1, 1, 1), (1, 2, 3), (2, 2, 2), (1, 3, 4), (2, 3, 4), (3, 2, 5), (4, 4, 4), (1, 8, 8)]
GPU_TILES = TILES + [(4, 6, 8), (6, 9, 8), (2, 8, 8)]
WINDOWS = [(3, 3, 3), (1, 1, 1), (2, 2, 2), (1, 3, 5), (4, 1, 2), (5, 5, 5)]
BUCKETS = [(2, 3, 2), (1, 2, 2), (2, 2, 2), (1, 1, 3), (3, 3, 1)]
RATIOS = [0.0, 0.25, 0.5, 0.5, 0.75, 0.9]


@dataclass
class Case:
    seed: int
    grid: Tuple[int, int, int]
    tile: Tuple[int, int, int]
    window: Tuple[int, int, int]
    bucket: Tuple[int, int, int]
    ratio: float
    batch: int
    heads: int
    head_dim: int
    decisions: List[int]
    dtype: torch.dtype
    layout: str
    kv_from: str
    text_len: int
    text_valid: Optional[List[int]]
    text_first: bool
    sta_config: Optional[tuple]
    nonfinite: List[Tuple[str, int, int, int, float]] = field(default_factory=list)  # (tensor, b, row, head, value)
    ties: int = 0  # rows copied onto other rows (exact coreset ties)

    @property
    def video_len(self) -> int:
        return math.prod(self.grid)

    def paths(self) -> List[str]:
        """The load paths this case drives (for the summary)."""
        out = []
        if 2 in self.decisions and self.head_dim in (64, 128):
            c = self.sta_config
            out.append("sliding auto" if c is None else ("sliding TMA" if c[4] else "sliding pointer"))
            if c is not None and c[4] and c[5] and c[5] < c[1]:
                out.append("sliding TMA tail block")
            P = math.prod(self.tile)
            if c is not None and c[6] and P % c[0] and max(16, 1 << (P % c[0] - 1).bit_length()) < c[0]:
                out.append("sliding row split")
            if self.text_len:
                out.append("sliding text")
        if 1 in self.decisions:
            out.append("coreset")
        if self.text_first:
            out.append("text first")
        if self.nonfinite:
            out.append("non-finite input")
        if self.ties:
            out.append("exact ties")
        return out


def make_case(seed: int, gpu: bool = False) -> Case:
    """One random problem; small enough for the CPU interpreter unless ``gpu``."""
    r = random.Random(seed)
    max_len = 1500 if gpu and r.random() < 0.5 else (300 if gpu else 60)
    while True:
        grid = tuple(r.choice([1, 1, 2, r.randint(1, 4 if not gpu else 12)]) if r.random() < 0.3 else
                     r.randint(1, (3, 6, 8)[a] if not gpu else (10, 24, 32)[a]) for a in range(3))
        if math.prod(grid) <= max_len:
            break
    dtype = r.choice([torch.float32, torch.float16] + ([torch.bfloat16] if gpu else []))
    head_dim = r.choice([64, 128] * 9 + [80 if r.random() < 0.5 else 96])
    heads = r.randint(1, 4)
    decisions = [r.choice([0, 1, 2, 2]) for _ in range(heads)]
    text_len = r.choice([0, 0, 1, 7])
    batch = r.randint(1, 3)
    valid = None
    if text_len and r.random() < 0.6:
        valid = [r.randint(0, text_len) for _ in range(batch)]
    configs = GPU_CONFIGS if gpu else CPU_CONFIGS
    case = Case(seed, grid, r.choice(GPU_TILES if gpu else TILES), r.choice(WINDOWS), r.choice(BUCKETS),
                r.choice(RATIOS), batch, heads, head_dim, decisions, dtype, r.choice(["wan", "hunyuan"]),
                r.choice(["query", "key"]), text_len, valid, bool(text_len) and r.random() < 0.5,
                r.choice(configs))
    if gpu and case.sta_config is not None:  # fewer pipeline stages where a forced config would not fit (fp32)
        bm, bn, warps, stages, *rest = case.sta_config
        while stages > 1 and ((stages - 1) * 2 * bn + bm) * head_dim * dtype.itemsize > 200 * 1024:
            stages -= 1
        case.sta_config = (bm, bn, warps, stages, *rest)
    S = case.video_len + text_len
    if r.random() < 0.3:
        for _ in range(r.randint(1, 3)):
            case.nonfinite.append((r.choice("qkv"), r.randrange(batch), r.randrange(S), r.randrange(heads),
                                   r.choice([float("nan"), float("inf"), float("-inf")])))
    if r.random() < 0.3:
        case.ties = r.randint(1, max(1, S // 3))
    return case


def make_inputs(case: Case, device) -> Tuple[torch.Tensor, ...]:
    """q, k, v as [B, S, H, D] (text-last order, non-finite values and ties applied), then in the case's token
    order and ComfyUI layout, each inside a NaN-guarded buffer (a read past its ends shows as NaN)."""
    B, H, D, L, T = case.batch, case.heads, case.head_dim, case.video_len, case.text_len
    g = torch.Generator().manual_seed(case.seed)
    xs = [torch.randn(B, L + T, H, D, generator=g) for _ in range(3)]
    r = random.Random(case.seed + 1)
    for _ in range(case.ties):  # exact copies of video rows (also of whole q/k/v triples)
        src, dst = r.randrange(L), r.randrange(L)
        for x in xs:
            x[:, dst] = x[:, src]
    for name, b, row, head, val in case.nonfinite:
        xs["qkv".index(name)][b, row, head, r.randrange(D)] = val
    if case.text_first:
        xs = [torch.cat([x[:, L:], x[:, :L]], 1) for x in xs]
    if case.layout == "hunyuan":
        xs = [x.transpose(1, 2) for x in xs]  # [B, H, S, D]
    else:
        xs = [x.reshape(B, L + T, H * D) for x in xs]  # [B, S, H*D]
    out = []
    for x in xs:
        t, _ = guarded(x.shape, case.dtype, device)
        out.append(t.copy_(x))
    return tuple(out)


def problem_of(case: Case, device) -> AttentionProblem:
    cfg = VortaConfig(tile=case.tile, window=case.window, bucket=case.bucket, ratio=case.ratio)
    tv = None if case.text_valid is None else torch.tensor(case.text_valid, device=device)
    return AttentionProblem(TokenGrid(*case.grid), cfg, kv_from=case.kv_from, text_len=case.text_len, text_valid=tv,
                            text_first=case.text_first)


def _heads_view(out: torch.Tensor, case: Case) -> torch.Tensor:
    return out.view(case.batch, -1, case.heads, case.head_dim).transpose(1, 2).float().cpu()  # (B, H, S, D)


def brute(case: Case, qkv, head: int) -> torch.Tensor:
    """(B, S, D) fp64 brute force of one head, from the row roles (never the engine's geometry)."""
    F_, H_, W_ = case.grid
    L, T = case.video_len, case.text_len
    branch = case.decisions[head]
    outs = []
    for b in range(case.batch):
        q, k, v = (x[b:b + 1, head:head + 1] for x in qkv)
        nv = T if case.text_valid is None else case.text_valid[b]
        if branch == 1:
            o = coreset_brute(q, k, v, F_, H_, W_, case.bucket, case.ratio, case.kv_from, T, [nv], case.text_first)
        else:
            video = torch.ones(L, L, dtype=torch.bool) if branch == 0 else sliding_mask(F_, H_, W_, case.tile, case.window)
            o = masked_attention(q[0], k[0], v[0], with_text_mask(video, T, nv, case.text_first)[None])[None]
        outs.append(o[0, 0])
    return torch.stack(outs)


TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
BRANCH_NAMES = ("full", "coreset", "sliding")
FAILURES = ("mismatch", "nonfinite", "leak", "brute", "oob", "error")  # verdicts that fail a run


def compare(got: torch.Tensor, ref: torch.Tensor, tol: float, where: Optional[torch.Tensor] = None) -> Optional[str]:
    """None when ``got`` is non-finite exactly where ``where`` is (default: ``ref``) and close to ``ref`` where both
    are finite; else what differs."""
    bad_got, bad_ref = ~torch.isfinite(got), ~torch.isfinite(ref if where is None else where)
    if not torch.equal(bad_got, bad_ref):
        diff = (bad_got ^ bad_ref).nonzero()[:3].tolist()
        return f"non-finite at {int(bad_got.sum())} places vs reference {int(bad_ref.sum())} (first differing {diff})"
    ok = ~bad_got & torch.isfinite(ref)
    if ok.any():
        err = float((got[ok].double() - ref[ok].double()).norm() / ref[ok].double().norm().clamp_min(1e-6))
        if err > tol:
            return f"relative error {err:.2e} > {tol:.0e}"
    return None


def leaks(out: torch.Tensor, qkv) -> List[List[int]]:
    """[b, h] pairs where ``out`` (B, H, S, D) is non-finite although none of q, k, v (B, H, S, D) has a
    non-finite value in that batch element and head: a NaN/inf that crossed a (batch, head) boundary."""
    dirty = torch.zeros(out.shape[:2], dtype=torch.bool)
    for x in qkv:
        dirty |= (~torch.isfinite(x)).flatten(2).any(2)
    return ((~torch.isfinite(out)).flatten(2).any(2) & ~dirty).nonzero().tolist()


def judge(case: Case, got: torch.Tensor, ref: torch.Tensor, qkv, tol: float, device_ref: Optional[torch.Tensor] = None,
          sliding_fell_back: bool = False, info: Optional[dict] = None) -> Tuple[str, str]:
    """The verdict on one case's output ``got`` (B, H, S, D, fp32 on the CPU) against ``ref``, the definition
    (the reference on the CPU), and ``device_ref``, the PyTorch reference run on the kernels' device with their
    tensors (None on the CPU: there it is ``ref``).

    * 'leak': a NaN/inf in a (batch element, head) whose inputs hold none, whatever the branch and reference.
    * Where non-finite values may be: a head whose math is PyTorch SDPA on the device (full heads; coreset heads,
      whose pooled attention is the reference's own call; sliding heads when no launch config fitted and the
      reference ran) exactly where ``device_ref`` has them, since SDPA backends do not follow the definition for
      NaN/inf.  Sliding heads run by the kernel exactly where the definition has them.  Else 'nonfinite'.
    * Values: close to the definition wherever both are finite ('mismatch').
    A coreset head that differs where two boundary similarities are within 1e-5 is a 'near-tie'.  ``info`` gets
    ``sdpa_differs``: heads whose device SDPA puts NaN/inf elsewhere than the definition (expected, not a failure)."""
    bad = leaks(got, qkv)
    if bad:
        return "leak", f"non-finite output in (batch, head) {bad[:4]}, whose inputs are all finite"
    differs = 0
    for h in range(case.heads):
        branch = case.decisions[h]
        on_sdpa = device_ref is not None and (branch != 2 or sliding_fell_back)
        where = device_ref[:, h] if on_sdpa else None
        if on_sdpa and not torch.equal(torch.isfinite(device_ref[:, h]), torch.isfinite(ref[:, h])):
            differs += 1
        why = compare(got[:, h], ref[:, h], tol, where)
        if not why:
            continue
        what = f"head {h} ({BRANCH_NAMES[branch]}{', device SDPA' if on_sdpa else ''}): {why}"
        if branch == 1 and 0 < selection_gap(case, qkv, h) < 1e-5:
            return "near-tie", what
        return ("nonfinite" if why.startswith("non-finite") else "mismatch"), what
    if info is not None:
        info["sdpa_differs"] = differs  # of the heads that passed (all of them when the verdict is ok)
    return "ok", ""


def _not_needed(q, k, v, heads, out, problem) -> None:
    """A branch that writes nothing: sliding heads run by the kernel are judged against the definition only."""


def run_case(case: Case, device, kernel_tol: Optional[dict] = None, brute_max_len: int = 80,
             info: Optional[dict] = None, device_reference: Optional[bool] = None) -> Tuple[str, str]:
    """(verdict, detail): verdict 'ok', 'refused' (unsupported head dim, clear error), 'mismatch', 'nonfinite',
    'leak' (see ``judge``), 'brute' (the reference against the brute force), 'oob' (a write past a buffer),
    'error', 'no-kernel' (the forced launch config did not fit: the sliding heads ran the reference, checked as
    such) or 'near-tie' (a coreset head differs where two similarities at the keep boundary are within 1e-5 but
    not equal: fp32 rounding decides, not the tie rule).  ``info``: filled by ``judge``.  ``device_reference``:
    judge the SDPA heads against the reference run on ``device`` (default: when that is not the CPU)."""
    from comfyui_vorta.vorta.kernels import sliding_launch
    from comfyui_vorta.vorta.kernels.launch import TRITON_BRANCHES

    tol = (kernel_tol or TOL)[case.dtype]
    p = problem_of(case, device)
    decisions = torch.tensor(case.decisions)
    sparse = any(d in (1, 2) for d in case.decisions)
    fell_back = []  # the sliding branch ran the reference (no launch config fits; known or found in this call)
    fallback = sliding_launch.reference_sliding

    def recorded_fallback(*args, **kw):
        fell_back.append(True)
        return fallback(*args, **kw)

    # A forced config whose K/V pipeline does not fit the GPU's shared memory (Triton needs more than the estimate
    # make_case fits to, e.g. fp32 at head dim 128) is retried with fewer stages: same load path, kernel tested.
    c = case.sta_config
    configs = [c] if c is None else [c[:3] + (stages,) + c[4:] for stages in range(c[3], 0, -1)]
    for config in configs:
        fell_back.clear()
        if config is None:
            os.environ.pop("VORTA_STA_CONFIG", None)
        else:
            os.environ["VORTA_STA_CONFIG"] = ",".join(map(str, config))
        q, k, v = make_inputs(case, device)
        sliding_launch.reference_sliding = recorded_fallback
        try:
            with poisoned_empty() as buffers:
                out = routed_attention(q, k, v, case.heads, decisions, p, layout=case.layout, branches=TRITON_BRANCHES)
            oob = buffers.check()
        except ValueError as e:
            if case.head_dim not in (64, 128) and sparse and f"head dim {case.head_dim}" in str(e):
                return "refused", str(e)
            return "error", f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - the fuzz reports every failure
            return "error", f"{type(e).__name__}: {e}"
        finally:
            sliding_launch.reference_sliding = fallback
            os.environ.pop("VORTA_STA_CONFIG", None)
        if not fell_back:
            break
    if not fell_back:
        case.sta_config = config  # what ran (the summary shows it)
    if case.head_dim not in (64, 128) and sparse:
        return "error", f"head dim {case.head_dim} was not refused"
    if oob:
        return "oob", oob
    cpu = [x.cpu().float() for x in (q, k, v)]
    ref = routed_attention(*cpu, case.heads, decisions, problem_of(case, "cpu"), layout=case.layout,
                           branches=REFERENCE_BRANCHES)
    device_ref = None
    if device_reference or (device_reference is None and torch.device(device).type != "cpu"):
        # the reference on the kernels' device and tensors: SDPA as they run it
        sdpa_heads = Branches(sliding=REFERENCE_BRANCHES.sliding if fell_back else _not_needed)  # judge's use
        device_ref = _heads_view(routed_attention(q, k, v, case.heads, decisions, p, layout=case.layout,
                                                  branches=sdpa_heads), case)
    qkv = [x.view(case.batch, -1, case.heads, case.head_dim).transpose(1, 2) if case.layout == "wan" else x
           for x in cpu]  # (B, H, S, D)
    ref_h = _heads_view(ref, case)
    verdict, detail = judge(case, _heads_view(out, case), ref_h, qkv, tol, device_ref, bool(fell_back), info)
    if verdict != "ok":
        return verdict, detail
    if case.video_len <= brute_max_len:
        for h in range(case.heads):
            why = compare(brute(case, qkv, h), ref_h[:, h].double(), 2e-5)
            if why:
                what = f"reference vs brute force, head {h} ({BRANCH_NAMES[case.decisions[h]]}): {why}"
                if case.decisions[h] == 1 and 0 < selection_gap(case, qkv, h) < 1e-5:
                    return "near-tie", what
                return "brute", what
    if fell_back:
        tried = f" (nor with {configs[-1][3]} stage{'s' if configs[-1][3] > 1 else ''})" if len(configs) > 1 else ""
        return "no-kernel", f"launch config {case.sta_config} did not fit{tried}: the sliding heads ran the reference"
    return "ok", ""


def selection_gap(case: Case, qkv, head: int) -> float:
    """Smallest gap between the last kept and the first pruned margin similarity of any bucket (fp32, the
    reference's order) in the selections of ``head``: Q's, and K's when K/V are selected by K."""
    L, T = case.video_len, case.text_len
    layout = BucketLayout(TokenGrid(*case.grid), case.bucket, case.ratio)
    members, keep = layout.members(), layout.keep_count()
    center = members.gather(1, layout.center_slot()[:, None]).squeeze(1)
    excluded = (members < 0) | (torch.arange(members.shape[1])[None, :] == layout.center_slot()[:, None])
    n_margins = (~excluded).sum(1)
    boundary = (keep > 0) & (keep < n_margins)
    gaps = [float("inf")]
    for x in qkv[:2] if case.kv_from == "key" else qkv[:1]:
        video = x[:, head, T:] if case.text_first else x[:, head, :L]  # (B, L, D)
        xn = reference.unit_rows(video)
        sim = (xn[:, members.clamp(min=0)] * xn[:, center][:, :, None]).sum(-1)  # (B, G, Bk)
        sim = torch.where(torch.isnan(sim), reference.NAN_SIMILARITY_KEY, sim).masked_fill(excluded, float("inf"))
        ordered = sim.sort(-1).values
        idx = keep.clamp(min=1)[None, :, None].expand(sim.shape[0], -1, 1)
        gap = (ordered.gather(2, idx) - ordered.gather(2, idx - 1)).squeeze(2)[:, boundary]
        if gap.numel():
            gaps.append(float(gap.min()))
    return min(gaps)


def case_summary(case: Case) -> str:
    return (f"seed {case.seed}: grid {case.grid} tile {case.tile} window {case.window} bucket {case.bucket} "
            f"ratio {case.ratio} B{case.batch} H{case.heads} D{case.head_dim} {str(case.dtype)[6:]} {case.layout} "
            f"kv_from {case.kv_from} text {case.text_len} valid {case.text_valid} first {case.text_first} "
            f"decisions {case.decisions} config {case.sta_config} nonfinite {case.nonfinite} ties {case.ties}")

