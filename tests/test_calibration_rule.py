"""The decision rule (one knob), its trade-off curve, and errors between calibrated timesteps."""
from __future__ import annotations

import math

import pytest
import torch

from comfyui_vorta.vorta.calibrate import branch_errors, relative_error
from comfyui_vorta.vorta.calibration_rule import (LOG_OFFSET, branch_costs, chosen_error, decide, errors_at, evaluate,
                                                  tradeoff)
from comfyui_vorta.vorta.config import CORESET, FULL, PRESETS, SLIDING
from comfyui_vorta.vorta.geometry import TokenGrid
from comfyui_vorta.vorta.routing import AttentionProblem

from test_calibrate import CONFIG, GRID, planted_heads

COSTS = torch.tensor([1.0, 0.25, 0.135], dtype=torch.float64)


def test_costs_of_the_official_wan_setting():
    p = AttentionProblem(TokenGrid(20, 45, 80), PRESETS["wan2.1-14b-720p"].config)
    c = branch_costs(p)
    assert c[FULL] == 1.0 and abs(c[CORESET] - 0.25) < 1e-9 and abs(c[SLIDING] - 0.135) < 1e-9


def test_cheapest_branch_within_the_budget_else_full():
    e = torch.tensor([[0, 0.05, 0.05], [0, 0.05, 0.3], [0, 0.3, 0.3], [0, float("nan"), 0.01], [0, 0.1, float("nan")]],
                     dtype=torch.float64)
    assert decide(e, COSTS, 0.1).tolist() == [SLIDING, CORESET, FULL, SLIDING, CORESET]
    assert decide(e, COSTS, 0.0).tolist() == [FULL] * 5
    assert decide(e, COSTS, math.inf).tolist() == [SLIDING, SLIDING, SLIDING, SLIDING, CORESET]  # NaN never passes
    assert chosen_error(e, decide(e, COSTS, 0.1)).tolist() == [0.05, 0.05, 0.0, 0.01, 0.1]


def test_planted_heads_get_their_planted_branch():
    q, k, v = planted_heads()
    p = AttentionProblem(GRID, CONFIG)
    c = branch_errors(q, k, v, p, fraction=0.25, salt=1)
    e = relative_error(c.err_sq, c.ref_sq).T  # (heads, 3)
    assert decide(e, branch_costs(p), 0.05).tolist() == [SLIDING, CORESET, FULL]


def test_tradeoff_curve_is_monotone_and_within_budget():
    g = torch.Generator().manual_seed(0)
    e = torch.rand(6, 4, 5, 3, generator=g, dtype=torch.float64)
    e[..., FULL] = 0
    points = tradeoff(e, COSTS, [0.0, 0.1, 0.3, 0.6, 1.0])
    flops = [p.flops for p in points]
    assert flops == sorted(flops, reverse=True) and flops[0] == 1.0
    assert [p.mean_error for p in points] == sorted(p.mean_error for p in points)
    assert all(p.worst_error <= p.max_error for p in points)
    assert points[-1].shares == (0.0, 0.0, 1.0) and abs(points[-1].saved - (1 - 0.135)) < 1e-12
    assert evaluate(e, COSTS, 0.3) == points[2]


@pytest.mark.parametrize("space", ["log", "linear"])
def test_errors_between_calibrated_timesteps_interpolate_and_are_constant_beyond(space):
    t = torch.tensor([900.0, 500.0, 100.0], dtype=torch.float64)  # sampling order: falling t
    e = torch.tensor([[0.0, 0.4, 0.1], [0.0, 0.2, 0.3], [0.0, float("nan"), 0.5]], dtype=torch.float64)
    got = errors_at(t, e, torch.tensor([1000.0, 900.0, 700.0, 500.0, 300.0, 100.0, 0.0]), space)
    if space == "linear":
        mid = lambda a, b: (a + b) / 2  # noqa: E731
    else:  # the geometric mean of (error + LOG_OFFSET), less the offset
        mid = lambda a, b: math.sqrt((a + LOG_OFFSET) * (b + LOG_OFFSET)) - LOG_OFFSET  # noqa: E731
    torch.testing.assert_close(got[:, 2], torch.tensor([0.1, 0.1, mid(0.1, 0.3), 0.3, mid(0.3, 0.5), 0.5, 0.5],
                                                       dtype=torch.float64))
    torch.testing.assert_close(got[:4, 1], torch.tensor([0.4, 0.4, mid(0.4, 0.2), 0.2], dtype=torch.float64))
    assert got[3, 1] == 0.2  # exactly the calibrated value although its neighbour is NaN
    assert torch.isnan(got[4:, 1]).all()  # NaN (never measured) spreads only towards itself: full attention there
    assert (got[:, 0] == 0).all()  # full attention: 0 everywhere, bit for bit


def test_log_interpolation_places_a_multiplicative_rise_where_it_crosses_the_budget():
    # a sliding error that grows tenfold per calibrated step (0.002 -> 0.02 -> 0.2), as a head's attention leaves the
    # window; at a budget of 0.05 the true crossing, 0.4 of the way from 0.02 to 0.2 in log, is where log
    # interpolation puts it; linear interpolation drops sliding after a sixth of the way
    t = torch.tensor([300.0, 200.0, 100.0], dtype=torch.float64)
    e = torch.tensor([[0.0, 0.9, 0.002], [0.0, 0.9, 0.02], [0.0, 0.9, 0.2]], dtype=torch.float64)
    q = torch.linspace(100.0, 200.0, 101, dtype=torch.float64)
    truth = 0.02 * 10 ** ((200.0 - q) / 100.0)
    assert ((errors_at(t, e, q)[:, SLIDING] - truth).abs() / truth).max() <= 0.05
    cross = lambda err: float(q[(err <= 0.05)].min())  # noqa: E731  smallest t where sliding is within budget
    assert abs(cross(errors_at(t, e, q)[:, SLIDING]) - cross(truth)) <= 1.0
    assert cross(errors_at(t, e, q, "linear")[:, SLIDING]) - cross(truth) >= 20.0
    with pytest.raises(ValueError, match="space"):
        errors_at(t, e, q, "cubic")


def test_exact_branches_stay_exact_between_exact_steps_at_knob_zero():
    t = torch.tensor([900.0, 100.0], dtype=torch.float64)
    e = torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.3, 0.0]], dtype=torch.float64)
    assert (decide(errors_at(t, e, torch.tensor([500.0, 123.4])), COSTS, 0.0) == SLIDING).all()


def test_one_calibrated_timestep_is_constant_everywhere():
    e = torch.tensor([[[0.0, 0.2, 0.1]]], dtype=torch.float64)
    got = errors_at(torch.tensor([500.0]), e, torch.tensor([0.0, 500.0, 1000.0]))
    assert got.shape == (3, 1, 3) and (got == e[0]).all()


def test_decide_broadcasts_over_steps_layers_heads():
    e = torch.zeros(2, 3, 4, 3, dtype=torch.float64)
    assert decide(e, COSTS, 0.1).shape == (2, 3, 4)
    with pytest.raises(RuntimeError):
        decide(torch.zeros(2, 2), COSTS, 0.1)


def test_log_interpolation_stays_between_its_neighbours():
    """exp/log rounding must not step outside the two calibrated values (a budget equal to the larger one would
    otherwise drop a branch both neighbours allow)."""
    g = torch.Generator().manual_seed(5)
    a = torch.rand(20000, generator=g, dtype=torch.float64) * 0.5
    b = a * (1 + (torch.rand(20000, generator=g, dtype=torch.float64) - 0.5) * 1e-12)  # nearly equal neighbours
    cal_t = torch.tensor([1000.0, 0.0], dtype=torch.float64)
    got = errors_at(cal_t, torch.stack([a, b]), torch.linspace(1, 999, 37, dtype=torch.float64))
    assert (got <= torch.maximum(a, b)).all() and (got >= torch.minimum(a, b)).all()
