"""VORTA Calibrate Router in a real ComfyUI (CPU, tiny Wan and HunyuanVideo): the node samples like SamplerCustom,
saves into models/vorta without overwriting, and the file -- through the Router Loader or the node's ROUTER output --
makes Apply VORTA take exactly the calibrated decisions."""
from __future__ import annotations

import asyncio
import json
import os

import pytest
import torch

from comfyui_vorta.vorta.calibration_file import CalibrationInfo
from comfyui_vorta.vorta.router_files import RouterFileError

LATENT = (1, 16, 5, 12, 16)  # grid 5x6x8: with tile 1x2x2 the sliding window does not cover the grid
CUSTOM = dict(preset="custom", tile_t=1, tile_h=2, tile_w=2, window_t=3, window_h=3, window_w=3, bucket_t=1,
              bucket_h=2, bucket_w=2, ratio=0.25)


@pytest.fixture(scope="module")
def pack(comfy):
    import comfyui_vorta

    ext = asyncio.run(comfyui_vorta.comfy_entrypoint())
    return {n.define_schema().node_id: n for n in asyncio.run(ext.get_node_list())}


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    """models/ in a temporary folder (the ComfyUI trees are read-only)."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    saved = folder_paths.folder_names_and_paths.get("vorta")
    folder_paths.folder_names_and_paths.pop("vorta", None)
    yield tmp_path / "models" / "vorta"
    if saved is not None:
        folder_paths.folder_names_and_paths["vorta"] = saved


def conds(harness, family):
    if family == "hunyuan":
        return harness.hunyuan_cond(1, valid=20), harness.hunyuan_cond(2, tokens=12)
    return harness.wan_cond(1), harness.wan_cond(2, tokens=3)


def node_inputs(model, pos, neg, sigmas, **over):
    import comfy.samplers

    inputs = dict(model=model, positive=pos, negative=neg, latent={"samples": torch.zeros(LATENT)}, sigmas=sigmas,
                  sampler=comfy.samplers.sampler_object("euler"), cfg=3.0, noise_seed=5, add_noise=True,
                  max_error=1.0, filename="calibrated/tiny", sample_fraction=0.5, **CUSTOM)
    inputs.update(over)
    return inputs


@pytest.mark.parametrize("kind,family", [("wan_t2v", "wan"), ("hunyuan", "hunyuan")])
def test_calibrate_save_load_apply_reproduces_decisions(pack, harness, models_dir, kind, family):
    import comfy.samplers
    import comfy.sample

    from comfyui_vorta.vorta.comfy.install import apply_vorta, find_patch
    from comfyui_vorta.vorta.comfy.preview import preview_table
    from comfyui_vorta.vorta.comfy.settings import Settings

    m = harness.load(kind)
    pos, neg = conds(harness, family)
    sigmas = comfy.samplers.calculate_sigmas(m.get_model_object("model_sampling"), "simple", 4)
    out = pack["VortaCalibrateRouter"].execute(**node_inputs(m, pos, neg, sigmas))
    bundle, latent, report, image = out.result
    path = models_dir / "calibrated" / "tiny.safetensors"
    assert path.is_file() and f"saved: {path}" in report and image.ndim == 4 and image.shape[-1] == 3
    assert "trade-off" in report and "100.00% of the calibrated decisions" in report

    # the trajectory is the dense model's own: SamplerCustom with the same inputs gives the same latent
    noise = comfy.sample.prepare_noise(torch.zeros(LATENT), 5)
    plain = comfy.sample.sample_custom(m, noise, 3.0, comfy.samplers.sampler_object("euler"), sigmas, pos, neg,
                                       torch.zeros(LATENT), disable_pbar=True, seed=5)
    assert torch.equal(latent["samples"], plain)

    # the loader gives the same ROUTER; its metadata says what was calibrated
    loader = pack["VortaRouterLoader"]
    assert "calibrated/tiny.safetensors" in loader.define_schema().inputs[0].options
    loaded = loader.execute(router_name="calibrated/tiny.safetensors").result[0]
    assert torch.equal(loaded.routers.weight, bundle.routers.weight)
    meta = loaded.routers.metadata
    assert meta["model"] == os.path.basename(harness.checkpoint(kind)) or "not recorded" in meta["model"]
    assert (meta["sampler"], meta["scheduler"], meta["steps"], meta["expert"]) == ("euler", "simple", "4", "all")
    assert meta["pack_version"] and meta["tile_size"] == "1,2,2" and json.loads(meta["sigmas"])[0] == 1.0
    assert len(json.loads(meta["step_stats"])) == 4 and float(meta["max_error"]) == 1.0
    a = find_patch(apply_vorta(m, Settings(mode="router"), loaded)).adapter
    info = CalibrationInfo.from_metadata(meta, a.num_layers, a.heads)

    # Apply VORTA routes with exactly the calibrated decisions, at the calibrated steps
    for b in (bundle, loaded):
        patched = apply_vorta(m, Settings(mode="router"), b)
        table, _ = preview_table(patched, sigmas)
        assert torch.equal(table, info.decisions)
    harness.sample(apply_vorta(m, Settings(mode="router"), loaded), LATENT, pos, neg, steps=2)

    # never overwritten: a second calibration under the same name gets _2
    out2 = pack["VortaCalibrateRouter"].execute(**node_inputs(m, pos, neg, sigmas[:3], noise_seed=6))
    assert (models_dir / "calibrated" / "tiny_2.safetensors").is_file() and "not overwritten" in out2.result[2]


def test_mixed_decisions_at_a_lower_budget(harness, models_dir):
    """With the knob at the median error the router mixes branches, and still reproduces them exactly."""
    import comfy.samplers

    from comfyui_vorta.vorta.calibration_rule import branch_costs, decide
    from comfyui_vorta.vorta.comfy.calibrate import calibrate
    from comfyui_vorta.vorta.comfy.calibrated_router import build_router
    from comfyui_vorta.vorta.config import VortaConfig

    m = harness.load("wan_t2v")
    pos, neg = conds(harness, "wan")
    ms = m.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 6)
    cfg = VortaConfig(tile=(1, 2, 2), bucket=(1, 2, 2), ratio=0.25)
    run = calibrate(m, pos, neg, {"samples": torch.zeros(LATENT)}, sigmas, comfy.samplers.sampler_object("euler"),
                    3.0, 0, True, cfg, 1.0)
    e = run.calibration.errors
    knob = float(torch.minimum(e[..., 1], e[..., 2]).median())
    result = build_router(run, run.adapter.time_mlp(m.get_model_object("diffusion_model")), knob)
    assert torch.equal(result.decisions, decide(e, branch_costs(run.problem), knob))
    assert len(result.decisions.unique()) >= 2 and result.fit.calibrated_agreement == 1.0


def test_two_experts_record_their_sigma_range(pack, harness, models_dir):
    """Wan 2.2 A14B style: the high-noise expert calibrates the first part of SplitSigmas, the low-noise expert
    continues its latent without new noise; each file says which part it serves, and a run of a router outside
    that part is reported in the run summary (and only then)."""
    import comfy.samplers

    from comfyui_vorta.vorta.comfy.install import apply_vorta, find_patch
    from comfyui_vorta.vorta.comfy.settings import Settings

    high, low = harness.load("wan_t2v"), harness.load("wan_t2v_b")
    pos, neg = conds(harness, "wan")
    sigmas = comfy.samplers.calculate_sigmas(high.get_model_object("model_sampling"), "simple", 6)
    first, second = sigmas[:4], sigmas[3:]
    node = pack["VortaCalibrateRouter"]
    r_high, lat, _, _ = node.execute(**node_inputs(high, pos, neg, first, filename="a14b_high")).result
    r_low, _, report, _ = node.execute(**node_inputs(low, pos, neg, second, latent=lat, add_noise=False,
                                                     filename="a14b_low")).result
    mh, ml = r_high.routers.metadata, r_low.routers.metadata
    assert (mh["expert"], ml["expert"]) == ("high-noise", "low-noise")
    assert mh["scheduler"] == "simple, steps 0-3 of 6" and ml["scheduler"] == "simple, steps 3-6 of 6"
    assert float(mh["sigma_min"]) == pytest.approx(float(first[-2])) and float(mh["sigma_max"]) == 1.0
    assert float(ml["sigma_max"]) == pytest.approx(float(second[0]))
    with pytest.raises(RouterFileError, match="time embedding"):  # the other expert (other weights): refused
        apply_vorta(low, Settings(mode="router"), r_high)
    # the high-noise router over the whole schedule (its own model, so the router is accepted): steps 3-6 lie
    # outside the part it was calibrated for, and the run summary says so
    patched = apply_vorta(high, Settings(mode="router"), r_high)
    harness.sample(patched, LATENT, pos, neg, steps=6)
    assert "ran 3 of 6 steps outside that range" in find_patch(patched).last_summary, find_patch(patched).last_summary
    import nodes  # ComfyUI's

    patched = apply_vorta(high, Settings(mode="router"), r_high)  # steps 0-3 of the same 6: inside its range
    nodes.KSamplerAdvanced().sample(patched, "enable", 0, 6, 3.0, "euler", "simple", pos, neg,
                                    {"samples": torch.zeros(LATENT)}, 0, 3, "enable")
    summary = find_patch(patched).last_summary
    assert "in 3 model calls" in summary, summary
    assert "outside that range" not in summary, summary


def test_existing_checks_refuse_a_router_calibrated_on_another_model(pack, harness, models_dir):
    import comfy.samplers

    from comfyui_vorta.vorta.comfy.install import apply_vorta
    from comfyui_vorta.vorta.comfy.settings import Settings

    m = harness.load("wan_t2v")
    pos, neg = conds(harness, "wan")
    sigmas = comfy.samplers.calculate_sigmas(m.get_model_object("model_sampling"), "simple", 2)
    bundle = pack["VortaCalibrateRouter"].execute(**node_inputs(m, pos, neg, sigmas)).result[0]
    with pytest.raises(RouterFileError, match="does not fit this model.*it is a wan router but the model is hunyuan"):
        apply_vorta(harness.load("hunyuan"), Settings(mode="router"), bundle)


def test_audit_reports_the_measured_error_of_the_chosen_branches(harness, models_dir):
    """Apply VORTA's audit with a calibrated router: at the first step the run and the calibration see the same q/k/v,
    so the audited errors equal the calibrated ones; a forced-full run audits as exact."""
    import comfy.samplers

    from comfyui_vorta.vorta.comfy.audit import enable_audit
    from comfyui_vorta.vorta.comfy.calibrate import calibrate
    from comfyui_vorta.vorta.comfy.calibrated_router import build_router
    from comfyui_vorta.vorta.comfy.install import apply_vorta, find_patch
    from comfyui_vorta.vorta.comfy.plan import RouterBundle
    from comfyui_vorta.vorta.comfy.settings import Settings
    from comfyui_vorta.vorta.config import VortaConfig

    m = harness.load("wan_t2v")
    pos, neg = conds(harness, "wan")
    sigmas = comfy.samplers.calculate_sigmas(m.get_model_object("model_sampling"), "simple", 3)
    cfg = VortaConfig(tile=(1, 2, 2), bucket=(1, 2, 2), ratio=0.25)
    run = calibrate(m, pos, neg, {"samples": torch.zeros(LATENT)}, sigmas, comfy.samplers.sampler_object("euler"),
                    3.0, 5, True, cfg, 1.0)
    e = run.calibration.errors
    knob = float(torch.minimum(e[..., 1], e[..., 2]).median())
    result = build_router(run, run.adapter.time_mlp(m.get_model_object("diffusion_model")), knob)
    patched = apply_vorta(m, Settings(mode="router"), RouterBundle(result.routers, cfg, "calibrated"))
    audit = enable_audit(patched, heads=4, fraction=1.0)  # every (layer, head) of the tiny model
    harness.sample(patched, LATENT, pos, neg, steps=3, seed=5)
    first = [r for r in audit.records if abs(r[0] - float(run.calibration.t[0])) < 1e-3]
    assert len(first) == 4 and {r[3] for r in first} == set(result.decisions[0].flatten().tolist())
    for _, layer, head, branch, err in first:
        assert branch == int(result.decisions[0, layer, head])
        assert err == pytest.approx(float(e[0, layer, head, branch]), rel=1e-4, abs=1e-5)
    summary = find_patch(patched).last_summary
    assert "audit (4 (layer, head) per step, 100.0% of query tiles)" in summary and "(n=" in summary

    full = apply_vorta(m, Settings(mode="full"), None)
    audit = enable_audit(full, heads=2)
    harness.sample(full, LATENT, pos, neg, steps=2)
    assert audit.errors[0] and max(audit.errors[0]) < 1e-5 and not audit.errors[1] and not audit.errors[2]
    assert "full mean 0.000" in find_patch(full).last_summary


def apply_node(pack, model, **changes):
    """Apply VORTA as the node runs it: every input at its declared default but ``changes``."""
    apply = pack["VortaApply"]
    defaults = {i.id: i.default for i in apply.define_schema().inputs if getattr(i, "default", None) is not None}
    return apply.execute(model=model, **{**defaults, **changes}).result[0]


@pytest.mark.parametrize("mode,branches", [("sliding", ["sliding"]), ("schedule", ["coreset", "sliding"])])
def test_apply_node_audit_input(pack, harness, mode, branches):
    """The audit reports for any routing, not only calibrated routers: a forced branch and the schedule."""
    inputs = {i.id: i for i in pack["VortaApply"].define_schema().inputs}
    assert inputs["audit_heads"].default == 0 and list(inputs)[-1] == "audit_heads"  # last: old workflows keep working
    patched = apply_node(pack, harness.load("wan_t2v"), mode=mode, start_percent=0.0, audit_heads=2)
    harness.sample(patched, LATENT, *conds(harness, "wan"), steps=4)
    from comfyui_vorta.vorta.comfy.install import find_patch

    summary = find_patch(patched).last_summary
    assert "error vs full attention of the chosen branch: " in summary, summary
    for branch in branches:
        assert f"{branch} mean" in summary, summary


def test_run_summary_names_the_backend_of_this_run_only(pack, harness):
    """The summary's backend is what ran in *this* run: a later run of the same patched model that routes no sparse
    head names none (the branch cache outlives runs)."""
    import nodes  # ComfyUI's

    from comfyui_vorta.vorta.comfy.install import find_patch

    patched = apply_node(pack, harness.load("wan_t2v"), mode="sliding", start_percent=0.5, backend="torch")
    pos, neg = conds(harness, "wan")
    harness.sample(patched, LATENT, pos, neg, steps=6)
    assert "backend torch->torch" in find_patch(patched).last_summary, find_patch(patched).last_summary
    nodes.KSamplerAdvanced().sample(patched, "enable", 0, 6, 3.0, "euler", "simple", pos, neg,
                                    {"samples": torch.zeros(LATENT)}, 0, 1, "enable")  # step 0 only: dense
    summary = find_patch(patched).last_summary
    assert "backend" not in summary and "sliding 0%" in summary, summary
