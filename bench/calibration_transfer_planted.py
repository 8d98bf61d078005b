"""Calibration transfer where heads switch branch with the noise level: planted heads, engine level (CPU, no ComfyUI).

    python bench/calibration_transfer_planted.py [--md out.md] [--tiny]

``bench/calibration_transfer.py`` measures transfer on a random-weight Wan inside ComfyUI, whose errors barely
depend on t, so it cannot tell the three ways of carrying decisions over apart.  Here every (layer, head) is a
planted attention problem on a video token grid, with the pack's own geometry, whose type moves with sigma:

* **coreset-redundant** at one end: every token of a coreset bucket has the same position and value (the bucket's),
  and attention is spread over the whole grid (a wide Gaussian kernel in position): the coreset branch is exact,
  sliding misses most of the attention;
* **local** at the other: tokens at their own positions with values of their own, and a narrow kernel that stays
  inside the sliding window: sliding is exact, coreset copies and drops tokens that differ;
* between them one mixing weight ``u`` moves the token offsets inside each bucket (``eps = u``) and the kernel width
  (``log w`` linear in ``u``) together, so both branch errors change smoothly and monotonically and cross at one
  ``u`` (~0.55).  ``u = sigmoid((center - sigma) / width)`` per head: 3 of 4 heads go coreset -> sliding as sigma
  falls (what the paper reports for trained models), 1 of 8 the other way, and 1 of 8 stay global (random content
  scores over the whole grid, values of their own: only full attention is exact).  Centers are spread uniformly over
  sigma 0.15-0.9, widths log-uniformly over 0.02-0.1.

Scores come from ``q.k/sqrt(D) = -|p_i - p_j|^2 / (2 w^2)`` (positions in channels 0-4 of q and k, frames twice as far
apart as pixels so that the one-frame window half-width matters), values ``0.3 m + v_bucket + eps v_token``.  The
head's parameters are "the model"; the random values ``m, v_bucket, v_token`` are "the prompt" (``--seed``).  Errors
are measured by the pack's own calibration (``vorta.calibrate.branch_errors`` on every query tile, pooled by
``CalibrationTable``), decisions by its rule, routers by its fit (``calibration_fit``) on a random Wan-shaped time MLP,
read back through ``RouterSet.decide`` with ``router_input`` as sampling does.

Schedules: sigmas of ComfyUI's flow model sampling (``ModelSamplingDiscreteFlow``, 1000 timesteps, shift) and its
``simple``, ``sgm_uniform`` and ``beta`` schedulers, computed with ComfyUI's formulas (``flow_sigmas``; the
integration test compares them with ComfyUI's own).  One calibration at ``simple`` 20 steps, shift 5; every other row
is a direct calibration of that schedule (the ground truth) against what the 20-step calibration decides there:
``nearest`` (timestep table), ``linear`` (errors linear in t), ``interp`` (log errors linear in t, the pack's rule
and what the router is fitted to), ``router`` (the fitted router).  Columns as in ``calibration_transfer.py``; "at
switches" scores only the cells whose two bracketing calibrated steps decide differently (``switching``), the cells
where the choice of a way matters.
"""
from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from calibration_transfer import fit_per_knob, table, transfer, write
from comfyui_vorta.vorta.calibrate import branch_errors
from comfyui_vorta.vorta.calibration_rule import branch_costs
from comfyui_vorta.vorta.calibration_table import Calibration, CalibrationTable
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid
from comfyui_vorta.vorta.routing import AttentionProblem
from e2e import fill_random_

CONFIG = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(1, 2, 2), ratio=0.5)
GRID = TokenGrid(6, 12, 12)  # tile grid 6x6x6: the 3x3x3 window is 12.5 % of the keys, coreset 25 %
TINY_GRID = TokenGrid(5, 10, 10)  # tile grid 5x5x5: sliding 21.6 %
HEAD_DIM = 16
WIDTHS = (0.7, 8.0)  # kernel width (tokens) of a local (u = 1) and a global (u = 0) head
DC = 0.3  # share of a value component common to all tokens (attention outputs are not zero-mean)
CONTENT = 2.4  # GLOBAL heads: random content scores q.k/sqrt(D) of std ~2 over the whole grid
FRAME_SCALE = 2.0  # distance of one frame, in pixels
CROSSING_U = (0.35, 0.75)  # where the coreset and sliding errors of a switching head cross (tests/)
CALIBRATION = ("simple", 20, 5.0)
KNOBS = (0.02, 0.05, 0.1)  # max_error values (DEFAULT_BUDGETS): the planted errors are ~0 over much of the schedule,
# so quantiles of the calibrated errors (calibration_transfer.py) would all be ~0
SCHEDULES = [("simple", 30, 5.0), ("simple", 50, 5.0), ("beta", 20, 5.0), ("sgm_uniform", 30, 5.0),
             ("simple", 30, 8.0)]
FORWARD, REVERSED, GLOBAL = 0, 1, 2
RAMPS = ("logistic", "linear")


# ------------------------------------------------------------------------------------------------ schedules
def flow_sigmas(scheduler: str, steps: int, shift: float) -> torch.Tensor:
    """(steps + 1,) sigmas, last 0, as ComfyUI's ``calculate_sigmas`` gives them for a flow model
    (``ModelSamplingDiscreteFlow``: 1000 timesteps, multiplier 1000, ``time_snr_shift``) -- Wan's model sampling."""
    shifted = lambda t: t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)  # noqa: E731  time_snr_shift
    table_ = shifted((torch.arange(1, 1001, 1) / 1000) * 1000 / 1000)  # float32, ComfyUI's ops
    if scheduler == "simple":
        ss = len(table_) / steps
        sigs = [float(table_[-(1 + int(x * ss))]) for x in range(steps)]
    elif scheduler == "sgm_uniform":
        ts = torch.linspace(table_[-1] * 1000, table_[0] * 1000, steps + 1)[:-1]
        sigs = [float(shifted(x / 1000)) for x in ts]
    elif scheduler == "beta":
        import numpy
        import scipy.stats

        ts = numpy.rint(scipy.stats.beta.ppf(1 - numpy.linspace(0, 1, steps, endpoint=False), 0.6, 0.6) * 999)
        sigs = [float(table_[int(t)]) for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}")
    return torch.FloatTensor(sigs + [0.0])


# ------------------------------------------------------------------------------------------- planted heads
@dataclass(frozen=True)
class Planted:
    """The "model": per (layer, head) its kind, and the sigma ``center`` and ``width`` of its switch.  ``ramp``: how
    the mixing weight moves with sigma, ``logistic`` (``sigmoid(z)``, z = (center - sigma) / width) or ``linear``
    (``clamp(1/2 + z/4, 0, 1)``: the same slope at the center, flat beyond 2 widths)."""

    kind: torch.Tensor  # (layers, heads) FORWARD / REVERSED / GLOBAL
    center: torch.Tensor  # (layers, heads) sigma where u = 1/2
    width: torch.Tensor  # (layers, heads)
    ramp: str = "logistic"

    def mix(self, sigma: float) -> torch.Tensor:
        """(layers, heads) u in [0, 1]: 0 coreset-redundant, 1 local; GLOBAL heads: NaN (they have their own q/k/v)."""
        z = (self.center - sigma) / self.width
        z = torch.where(self.kind == REVERSED, -z, z)
        u = torch.sigmoid(z) if self.ramp == "logistic" else (0.5 + z / 4).clamp(0, 1)
        return torch.where(self.kind == GLOBAL, torch.full_like(u, float("nan")), u)

    def sigma_at(self, u: float) -> torch.Tensor:
        """(layers, heads) the sigma where a switching head's mixing weight is ``u`` (NaN for GLOBAL heads)."""
        z = math.log(u / (1 - u)) if self.ramp == "logistic" else 4 * (u - 0.5)
        s = torch.where(self.kind == REVERSED, self.center + self.width * z, self.center - self.width * z)
        return torch.where(self.kind == GLOBAL, torch.full_like(s, float("nan")), s)


def planted_model(layers: int, heads: int, seed: int = 0, ramp: str = "logistic") -> Planted:
    if ramp not in RAMPS:
        raise ValueError(f"ramp must be one of {RAMPS}, got {ramp!r}")
    g = torch.Generator().manual_seed(seed)
    n = layers * heads
    kind = torch.full((n,), FORWARD, dtype=torch.long)
    k = max(1, n // 8)
    perm = torch.randperm(n, generator=g)
    kind[perm[:k]], kind[perm[k:2 * k]] = REVERSED, GLOBAL
    r = torch.rand(2, n, generator=g, dtype=torch.float64)
    center = 0.15 + 0.75 * r[0]
    width = torch.exp(math.log(0.02) + (math.log(0.1) - math.log(0.02)) * r[1])
    return Planted(kind.view(layers, heads), center.view(layers, heads), width.view(layers, heads), ramp)


@dataclass(frozen=True)
class Prompt:
    """The "prompt": token positions, and per (layer, head) random values."""

    pos: torch.Tensor  # (L, 3) token positions
    center: torch.Tensor  # (L, 3) position of each token's bucket (mean of its members)
    value: torch.Tensor  # (layers, heads, 3, L, D): common, bucket, token values
    content: torch.Tensor  # (layers, heads, 2, L, D - 5): query and key content (GLOBAL heads' random scores)


def make_prompt(grid: TokenGrid, config: VortaConfig, layers: int, heads: int, seed: int = 0,
                head_dim: int = HEAD_DIM) -> Prompt:
    g = torch.Generator().manual_seed(seed + 1_000_003)
    members = BucketLayout(grid, config.bucket, config.ratio).members()
    L, G = grid.numel, members.shape[0]
    bucket_of = torch.empty(L, dtype=torch.long)
    valid = members >= 0
    bucket_of[members[valid]] = torch.arange(G)[:, None].expand_as(members)[valid]
    pos = grid.coords().double() * torch.tensor([FRAME_SCALE, 1.0, 1.0], dtype=torch.float64)
    center = torch.zeros(G, 3, dtype=torch.float64).index_add_(0, bucket_of, pos)
    center /= torch.bincount(bucket_of, minlength=G).double()[:, None]
    r = lambda *s: torch.randn(layers, heads, *s, generator=g, dtype=torch.float64)  # noqa: E731
    value = torch.stack([r(1, head_dim).expand(-1, -1, L, -1), r(G, head_dim)[:, :, bucket_of], r(L, head_dim)], 2)
    return Prompt(pos, center[bucket_of], value, r(2, L, head_dim - 5))


def qkv(model: Planted, prompt: Prompt, sigma: float) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer ``[1, L, heads, D]`` fp32 q, k, v at noise level ``sigma``."""
    u = model.mix(sigma)
    glob = torch.isnan(u)
    eps = torch.where(glob, torch.ones_like(u), u)  # offsets inside the bucket and token values: 0 .. 1
    loc = torch.where(glob, torch.zeros_like(u), u)  # kernel: wide .. narrow
    lo, hi = math.log(WIDTHS[0]), math.log(WIDTHS[1])
    w = torch.exp(lo + (1 - loc) * (hi - lo))
    layers, heads, _, L, D = prompt.value.shape
    pos = prompt.center + eps[..., None, None] * (prompt.pos - prompt.center)  # (layers, heads, L, 3)
    sq = (pos * pos).sum(-1)
    a = (math.sqrt(D) / (2 * w * w))[..., None]
    q = torch.zeros(layers, heads, L, D, dtype=torch.float64)
    k = torch.zeros_like(q)
    q[..., :3], q[..., 3], q[..., 4] = 2 * a[..., None] * pos, -a, -a * sq  # q.k = -a |p_i - p_j|^2 (+ per row)
    k[..., :3], k[..., 3], k[..., 4] = pos, sq, 1.0
    g = glob[..., None, None].double()
    q[..., 5:], k[..., 5:] = g * CONTENT * prompt.content[:, :, 0], g * prompt.content[:, :, 1]
    v = DC * prompt.value[:, :, 0] + prompt.value[:, :, 1] + eps[..., None, None] * prompt.value[:, :, 2]
    return [tuple(x[i].transpose(0, 1)[None].float().contiguous() for x in (q, k, v)) for i in range(layers)]


def calibrate(model: Planted, prompt: Prompt, problem: AttentionProblem, sigmas: torch.Tensor) -> Calibration:
    """The pack's calibration of the planted heads at every sigma the sampler evaluates (``sigmas[:-1]``), on every
    query tile, pooled per timestep (t = 1000 sigma, as ComfyUI's flow models) as a real calibration is."""
    layers, heads = model.kind.shape
    tab = CalibrationTable(layers, heads)
    for sigma in sigmas[:-1].tolist():
        for layer, (q, k, v) in enumerate(qkv(model, prompt, sigma)):
            tab.add(float(torch.tensor(sigma) * 1000), sigma, layer, branch_errors(q, k, v, problem, fraction=1.0))
    return tab.result()


def time_mlp(dim: int, seed: int = 0) -> nn.Module:
    """A Wan-shaped time MLP (sinusoid 256 -> dim -> SiLU -> dim) with the random weights of the e2e models."""
    m = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
    fill_random_(m, seed)
    return m


def name(scheduler: str, steps: int, shift: float) -> str:
    return f"{scheduler} {steps}, shift {shift:g}"


def measure(grid: TokenGrid, layers: int, heads: int, dim: int, seed: int,
            schedules: Sequence[Tuple[str, int, float]], knobs: Sequence[float] = KNOBS,
            ramp: str = "logistic") -> Tuple[list, dict]:
    """Calibrate once at ``CALIBRATION``, then every schedule directly, and compare (``transfer`` rows)."""
    problem = AttentionProblem(grid, CONFIG)
    model = planted_model(layers, heads, seed, ramp)
    prompt = make_prompt(grid, CONFIG, layers, heads, seed)
    costs = branch_costs(problem)
    cal = calibrate(model, prompt, problem, flow_sigmas(*CALIBRATION))
    mlp = time_mlp(dim, seed)
    routers, fits = fit_per_knob("wan", mlp, cal.t, cal.errors, costs, knobs)
    truths = [(f"{name(*CALIBRATION)}, other prompt (noise floor)",
               calibrate(model, make_prompt(grid, CONFIG, layers, heads, seed + 7), problem,
                         flow_sigmas(*CALIBRATION)))]
    truths += [(name(*s), calibrate(model, prompt, problem, flow_sigmas(*s))) for s in schedules]
    rows = [(n, *r) for n, truth in truths
            for r in transfer(cal.t, cal.errors, truth.t, truth.errors, costs, routers, "wan", mlp)]
    kinds = torch.bincount(model.kind.flatten(), minlength=3).tolist()
    info = {"problem": problem, "costs": costs, "kinds": kinds, "calibration": cal, "truths": truths, "mlp": mlp,
            "routers": routers, "fits": fits, "model": model}
    return rows, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/calibration_transfer_planted.py")
    ap.add_argument("--md", help="also write the table to this markdown file")
    ap.add_argument("--seed", type=int, default=0, help="planted model and prompt")
    ap.add_argument("--ramp", choices=RAMPS, default="logistic", help="how each head's mixing weight moves with sigma")
    ap.add_argument("--tiny", action="store_true", help="a small grid, 1 layer x 8 heads, two schedules (smoke run)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    grid, layers, heads, dim = (TINY_GRID, 1, 8, 256) if args.tiny else (GRID, 4, 8, 512)
    rows, info = measure(grid, layers, heads, dim, args.seed, SCHEDULES[:2] if args.tiny else SCHEDULES,
                         ramp=args.ramp)
    kinds, costs = info["kinds"], info["costs"]
    fits = "; ".join(f"{b:g}: {f.calibrated_agreement:.1%} / {f.grid_agreement:.2%}" for b, f in info["fits"].items())
    header = (f"{datetime.date.today()} | CPU | torch {torch.__version__} | planted heads, {args.ramp} ramp: {layers} "
              f"layers x {heads} heads ({kinds[FORWARD]} coreset -> sliding as sigma falls, {kinds[REVERSED]} sliding "
              f"-> coreset, {kinds[GLOBAL]} global), head dim {HEAD_DIM}, grid {'x'.join(map(str, grid.shape))}, tile "
              f"{CONFIG.tile} window {CONFIG.window} bucket {CONFIG.bucket} ratio {CONFIG.ratio} (FLOPs vs dense: "
              f"coreset {float(costs[1]):.3f}, sliding {float(costs[2]):.3f}), seed {args.seed}; calibrated at "
              f"{name(*CALIBRATION)}; router fitted on a random time MLP of dim {dim}, reproducing calibrated / "
              f"interpolated decisions at max_error {fits}; {time.perf_counter() - start:.0f} s")
    write("\n".join([header, ""] + table(rows)), args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
