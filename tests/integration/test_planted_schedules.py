"""The planted transfer benchmark computes its schedules without ComfyUI (``flow_sigmas``): they equal ComfyUI's own
``calculate_sigmas`` for a flow model (Wan's ``ModelSamplingDiscreteFlow``) bit for bit."""
from __future__ import annotations

import sys

import pytest
import torch

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import calibration_transfer_planted as planted  # noqa: E402


@pytest.mark.parametrize("scheduler", ["simple", "sgm_uniform", "beta"])
def test_flow_sigmas_equal_comfyui(comfy, scheduler):
    import comfy.model_sampling
    import comfy.samplers

    for shift in (3.0, 5.0, 8.0):
        ms = comfy.model_sampling.ModelSamplingDiscreteFlow()
        ms.set_parameters(shift=shift)
        for steps in (4, 20, 30, 50):
            want = comfy.samplers.calculate_sigmas(ms, scheduler, steps).cpu()
            assert torch.equal(planted.flow_sigmas(scheduler, steps, shift), want), (scheduler, shift, steps)
