"""Fitting the official router form to a calibration; saving, loading and checking a calibrated router file."""
from __future__ import annotations

import json
import pathlib
import sys

import pytest
import torch

from comfyui_vorta.vorta.calibration_file import (CalibrationInfo, check_reproduces, decode_decisions, decode_errors,
                                                  encode_decisions, encode_errors, pack_version, reproduced_share,
                                                  time_fingerprint)
from comfyui_vorta.vorta.calibration_fit import fit_routers, grid_targets, router_features, time_grid
from comfyui_vorta.vorta.calibration_rule import decide, errors_at
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import official_layer_names
from comfyui_vorta.vorta.router_files import RouterFileError, check_fits, load_router_file, save_safetensors
from comfyui_vorta.vorta.timestep import router_input

COSTS = torch.tensor([1.0, 0.25, 0.135], dtype=torch.float64)
LAYERS, HEADS, DIM = 3, 4, 256


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from fingerprint_margins import time_mlp  # noqa: E402  (a Wan-shaped random time MLP of width DIM by default)


def synthetic_calibration(steps: int = 20, seed: int = 0):
    """Calibrated timesteps of a shift-5 flow schedule and errors that drift with t, per (layer, head)."""
    s = torch.linspace(1, 0, steps + 1)[:-1].double()
    t = 1000 * 5 * s / (1 + 4 * s)
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(LAYERS, HEADS, 3, generator=g, dtype=torch.float64) * 0.4
    slope = (torch.rand(LAYERS, HEADS, 3, generator=g, dtype=torch.float64) - 0.5) * 0.8
    e = (base + slope * (t / 1000)[:, None, None, None]).clamp(min=0)
    e[..., 0] = 0
    return t, e


@pytest.fixture(scope="module")
def fitted():
    t, e = synthetic_calibration()
    mlp = time_mlp(0)
    grid, targets, anchors = grid_targets("wan", t, e, COSTS, 0.2)
    routers, report = fit_routers("wan", official_layer_names("wan", LAYERS), router_features("wan", mlp, grid),
                                  targets, anchors)
    return t, e, mlp, routers, report, targets


def decisions_at(routers, family, mlp, ts):
    return torch.stack([routers.decide(router_input(family, mlp, torch.tensor([float(x)]))) for x in ts])


def test_fit_reproduces_calibrated_and_interpolated_decisions(fitted):
    t, e, mlp, routers, report, targets = fitted
    assert report.calibrated_agreement == 1.0 and report.grid_agreement >= 0.999
    assert torch.equal(decisions_at(routers, "wan", mlp, t), decide(e, COSTS, 0.2))
    other = torch.tensor([990.0, 870.5, 500.2, 123.0, 3.0])  # a schedule never calibrated on
    want = decide(errors_at(t, e, other.trunc()), COSTS, 0.2)  # Wan routes on the integer part of t
    assert (decisions_at(routers, "wan", mlp, other) == want).double().mean() >= 0.99
    assert routers.weight.dtype == torch.float32 and torch.isfinite(routers.weight).all()
    assert len(set(decide(e, COSTS, 0.2).flatten().tolist())) == 3  # the case is not trivial


def test_fit_survives_fp8_and_bf16_time_mlp(fitted):
    t, e, mlp, routers, report, _ = fitted
    want = decide(e, COSTS, 0.2)
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        m = time_mlp(0)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.to(dtype).float())
        assert (decisions_at(routers, "wan", m, t) == want).double().mean() >= 0.98, dtype


def test_hunyuan_fit_on_float_timesteps():
    t, e = synthetic_calibration(seed=1)
    t = t + 0.37  # HunyuanVideo routes on float t
    mlp = time_mlp(2)
    grid, targets, anchors = grid_targets("hunyuan", t, e, COSTS, 0.15)
    assert grid.numel() == time_grid("hunyuan").numel() + t.numel() and int(anchors.sum()) == t.numel()
    names = official_layer_names("hunyuan", double=1, single=2)
    routers, report = fit_routers("hunyuan", names, router_features("hunyuan", mlp, grid), targets, anchors)
    assert report.calibrated_agreement == 1.0
    assert torch.equal(decisions_at(routers, "hunyuan", mlp, t), decide(e, COSTS, 0.15))


def test_save_load_round_trip_reproduces_decisions_and_metadata(fitted, tmp_path):
    t, e, mlp, routers, report, _ = fitted
    dec = decide(e, COSTS, 0.2)
    meta = {"calibrated": "1", "calibration_t": json.dumps(t.tolist()), "calibration_decisions": encode_decisions(dec),
            "calibration_errors": encode_errors(e), "calibration_errors_shape": json.dumps(list(e.shape)),
            "sigma_max": "1.0", "sigma_min": "0.05", "max_error": "0.2", "expert": "all", "pack_version": pack_version(),
            "sampler": "euler", "scheduler": "simple", "steps": "20", "shift": "5.0"}
    cfg = VortaConfig(tile=(4, 6, 8))
    path = str(tmp_path / "cal.safetensors")
    save_safetensors(routers, path, cfg, model="tiny-wan.safetensors", extra=meta)
    loaded, trained = load_router_file(path)
    assert trained == cfg
    assert {k: loaded.metadata[k] for k in meta} == meta and loaded.metadata["model"] == "tiny-wan.safetensors"
    assert torch.equal(loaded.weight, routers.weight) and torch.equal(loaded.bias, routers.bias)
    info = CalibrationInfo.from_metadata(loaded.metadata, LAYERS, HEADS)
    assert torch.equal(info.decisions, dec) and torch.allclose(info.t, t) and info.max_error == 0.2
    assert torch.allclose(info.errors, e, atol=1e-3, rtol=1e-3)  # fp16 storage
    assert torch.equal(decisions_at(loaded, "wan", mlp, t), dec)
    assert check_reproduces(loaded, info, "wan", mlp) == 1.0
    assert pack_version() != "unknown"


def test_a_file_calibrated_on_another_model_is_refused(fitted):
    """The time fingerprint refuses every other model (here: 10 other time MLPs, a 30 % weight change) and accepts
    the same model in bf16, fp16 or fp8 values; files without a fingerprint fall back to the decisions share."""
    t, e, mlp, routers, report, _ = fitted
    dec = decide(e, COSTS, 0.2)
    info = CalibrationInfo(t, dec, 1.0, 0.05, 0.2, model="model-A.safetensors", fingerprint=time_fingerprint("wan", mlp))
    fine_tuned = time_mlp(0)
    with torch.no_grad():
        for p in fine_tuned.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05 * 0.3)
    for other in [time_mlp(seed) for seed in range(1, 11)] + [fine_tuned]:
        with pytest.raises(RouterFileError, match="calibrated on model-A.safetensors: this model's time embedding"):
            check_reproduces(routers, info, "wan", other)
    fp8 = time_mlp(0)
    with torch.no_grad():
        for p in fp8.parameters():
            p.copy_(p.to(torch.float8_e4m3fn).float())
    for same in (mlp, time_mlp(0).to(torch.bfloat16), time_mlp(0).half(), fp8):
        assert check_reproduces(routers, info, "wan", same) >= 0.99
    # no fingerprint (files of an earlier version): the share of reproduced decisions, thin on this fixture (most
    # of its decisions do not change with t, so other time MLPs reproduce 85-98 % of them)
    old = CalibrationInfo(t, dec, 1.0, 0.05, 0.2, model="model-A.safetensors")
    assert reproduced_share(routers, old, "wan", time_mlp(3)) < 0.9
    with pytest.raises(RouterFileError, match="calibrated on model-A.safetensors: on this model it reproduces"):
        check_reproduces(routers, old, "wan", time_mlp(3))
    with pytest.raises(RouterFileError, match="does not fit"):  # the existing checks: other dims
        check_fits(routers, "wan", LAYERS, HEADS, DIM * 2)
    with pytest.raises(RouterFileError, match="hunyuan"):
        check_fits(routers, "hunyuan", LAYERS, HEADS, DIM)


def test_metadata_codecs_and_damage():
    d = torch.randint(0, 3, (4, 2, 3))
    assert torch.equal(decode_decisions(encode_decisions(d), 2, 3), d)
    with pytest.raises(ValueError):
        decode_decisions("0123,000000", 2, 3)
    x = torch.tensor([[0.5, float("nan"), float("inf")]], dtype=torch.float64)
    y = decode_errors(encode_errors(x), [1, 3])
    assert y[0, 0] == 0.5 and torch.isnan(y[0, 1]) and torch.isinf(y[0, 2])
    assert CalibrationInfo.from_metadata({"format": "vorta-router"}, 2, 3) is None
    with pytest.raises(RouterFileError, match="calibration metadata is damaged"):
        CalibrationInfo.from_metadata({"calibrated": "1", "calibration_t": "[1, 2]"}, 2, 3, source="x.safetensors")


PINNED_POSITIVE = 40985
PINNED_ROWS = [[1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0]]


def test_fingerprint_projection_is_pinned():
    """Stored fingerprints compare only through the same projection: it is integer arithmetic, pinned here."""
    from comfyui_vorta.vorta.calibration_file import _projection

    p = _projection(5120)
    assert p.shape == (5120, 16) and set(p.unique().tolist()) == {-1.0, 1.0}
    assert int((p > 0).sum()) == PINNED_POSITIVE and (p[:2] > 0).int().tolist() == PINNED_ROWS


def test_fingerprint_margins_bench_runs(capsys):
    """bench/fingerprint_margins.py (the numbers behind SAME_MODEL_SIMILARITY) still runs and prints its table."""
    import runpy

    runpy.run_path(str(pathlib.Path(__file__).resolve().parents[1] / "bench" / "fingerprint_margins.py"),
                   run_name="__main__")
    assert "| fp8 e4m3 values | 0.99" in capsys.readouterr().out
