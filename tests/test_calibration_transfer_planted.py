"""The planted transfer benchmark (``bench/calibration_transfer_planted.py``): its oracle is sound -- a direct
calibration recovers the planted heads' types and the sigma where each switches -- and it runs end to end at a tiny
size through the pack's calibration, rule, fit and ``RouterSet.decide``."""
from __future__ import annotations

import math
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import calibration_transfer_planted as planted  # noqa: E402
from calibration_transfer import nearest_at, switching  # noqa: E402
from comfyui_vorta.vorta.config import CORESET, SLIDING  # noqa: E402
from comfyui_vorta.vorta.routing import AttentionProblem  # noqa: E402

LAYERS, HEADS = 1, 8


def test_direct_calibration_recovers_the_planted_switch_points():
    model = planted.planted_model(LAYERS, HEADS, seed=3)
    prompt = planted.make_prompt(planted.TINY_GRID, planted.CONFIG, LAYERS, HEADS, seed=3)
    problem = AttentionProblem(planted.TINY_GRID, planted.CONFIG)
    sigmas = torch.cat([torch.linspace(1.0, 0.04, 49), torch.zeros(1)])  # every 0.02, a sampler never evaluates 0
    cal = planted.calibrate(model, prompt, problem, sigmas)
    assert cal.steps == 49 and torch.allclose(cal.t, 1000 * cal.sigma.float().double(), rtol=1e-6)
    kinds = model.kind.flatten().tolist()
    assert sorted(set(kinds)) == [planted.FORWARD, planted.REVERSED, planted.GLOBAL]
    lo, hi = planted.CROSSING_U
    for h, kind in enumerate(kinds):
        e = cal.errors[:, 0, h]
        core, slide, s = e[:, CORESET], e[:, SLIDING], cal.sigma
        if kind == planted.GLOBAL:  # only full attention is exact, at every sigma
            assert (core > 0.2).all() and (slide > 0.2).all(), h
            continue
        u = torch.stack([model.mix(float(x))[0, h] for x in s])
        redundant, local = u < 0.05, u > 0.95  # where the sweep reaches them (a switch near sigma 1 starts at u ~ 0.1)
        assert redundant.any() or local.any(), h
        assert (core[redundant] < 0.03).all() and (slide[redundant] > 0.2).all(), h  # coreset nearly exact
        assert (slide[local] < 0.03).all() and (core[local] > 0.2).all(), h  # sliding nearly exact
        # the best sparse branch changes exactly once, where the planted mixing weight is in CROSSING_U
        best = (slide < core).long()
        assert int((best[1:] != best[:-1]).sum()) == 1, (h, core, slide)
        i = int(torch.nonzero(best[1:] != best[:-1])[0])
        d0, d1 = float(core[i] - slide[i]), float(core[i + 1] - slide[i + 1])
        crossing = float(s[i] + (s[i + 1] - s[i]) * d0 / (d0 - d1))  # linear between the two sweep points
        a, b = sorted([float(model.sigma_at(lo)[0, h]), float(model.sigma_at(hi)[0, h])])
        assert a <= crossing <= b, (h, a, crossing, b)
        assert (best[0] == 0) == (kind == planted.FORWARD)  # coreset at high noise, or the other way round


def test_flow_sigmas_follow_the_flow_schedules():
    s = planted.flow_sigmas("simple", 20, 5.0)
    assert s.numel() == 21 and s[0] == 1.0 and s[-1] == 0.0 and bool((s[1:] < s[:-1]).all())
    x = 1 - 1 / 20  # step 1 of 'simple': 50 table entries below the top
    assert math.isclose(float(s[1]), 5 * x / (1 + 4 * x), rel_tol=1e-6)
    for sched in ("sgm_uniform", "beta"):
        t = planted.flow_sigmas(sched, 30, 8.0)
        assert t[-1] == 0.0 and bool((t[1:] < t[:-1]).all()) and 20 <= t.numel() <= 31, sched


def test_switching_marks_cells_between_calibrated_steps_that_decide_differently():
    cal_t = torch.tensor([900.0, 500.0, 100.0])  # sampling order
    dec = torch.tensor([[[0, 1]], [[0, 2]], [[1, 2]]])  # (steps, layers, heads)
    t = torch.tensor([950.0, 900.0, 700.0, 300.0, 100.0, 50.0])
    got = switching(cal_t, dec, t)
    want = torch.tensor([[[0, 0]], [[0, 0]], [[0, 1]], [[1, 0]], [[0, 0]], [[0, 0]]], dtype=torch.bool)
    assert torch.equal(got, want)


def test_tiny_run_end_to_end():
    rows, info = planted.measure(planted.TINY_GRID, LAYERS, HEADS, 256, 0, [("simple", 30, 5.0)], knobs=(0.05,))
    assert [r[0] for r in rows] == ["simple 20, shift 5, other prompt (noise floor)", "simple 30, shift 5"]
    for _, b, own, cells in rows:
        assert own["agree"] == 1.0 and b == 0.05
        assert set(cells) == {"nearest", "linear", "interp", "router"}
        for c in cells.values():
            assert 0.5 <= c["agree"] <= 1.0 and 0.0 <= c["over"] <= 1.0
    assert rows[1][2]["switches"] > 0  # the 30-step schedule has cells between calibrated steps that switch
    text = "\n".join(planted.table([(f"{r[0]}", *r[1:]) for r in rows]))
    assert text.count("\n| simple") == 2


def test_nearest_at_takes_the_nearest_calibrated_timestep():
    t = torch.tensor([1000.0, 800.0, 600.0], dtype=torch.float64)
    values = torch.tensor([[0.1], [0.3], [0.5]])
    assert nearest_at(t, values, torch.tensor([720.0, 680.0, 1200.0, 0.0]))[:, 0].tolist() == pytest.approx(
        [0.3, 0.5, 0.1, 0.5])
