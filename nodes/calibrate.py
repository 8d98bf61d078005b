"""VORTA Calibrate Router: the user's own sampling run -> a router file for their model (and its report)."""
from comfy_api.latest import io, ui

from ..vorta.comfy.calibration_node import run_calibration
from ..vorta.comfy.options import geometry_config
from ..vorta.comfy.run_info import model_file_in_prompt
from ..vorta.comfy.setting_specs import CALIBRATE
from .options import spec_inputs
from .types import CATEGORY, Router


class VortaCalibrateRouter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VortaCalibrateRouter",
            display_name="VORTA Calibrate Router",
            category=CATEGORY,
            is_output_node=True,
            description="Runs your sampling once (your model, prompts, latent, sampler and CFG) with full attention, "
                        "measures per step, layer and head how far sliding-tile and coreset attention are from full, "
                        "and saves a router for this model to models/vorta (never over an existing file). Takes about "
                        "as long as one generation.",
            inputs=[
                io.Model.Input("model", tooltip="The Wan 2.x or HunyuanVideo model to calibrate (after LoRAs and "
                                                "ModelSamplingSD3, as you will generate with it)."),
                io.Conditioning.Input("positive", tooltip="The prompt(s) to calibrate on."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (the CFG pass is measured too)."),
                io.Latent.Input("latent", tooltip="The latent to sample: sets the resolution and frame count "
                                                  "(batch > 1 calibrates on several latents at once)."),
                io.Sigmas.Input("sigmas", tooltip="The schedule (BasicScheduler, or one part of SplitSigmas for one "
                                                  "expert of a two-expert model)."),
                io.Sampler.Input("sampler", tooltip="Your sampler (KSamplerSelect)."),
                *spec_inputs(CALIBRATE),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],  # to name the model file where the MODEL does not
            outputs=[
                Router.Output(display_name="ROUTER", tooltip="The calibrated router, as VORTA Router Loader would load "
                                                             "the saved file; connect it to Apply VORTA (mode router)."),
                io.Latent.Output(display_name="LATENT", tooltip="The sampled latent (full attention): decode it, or feed "
                                                               "the second expert's calibration."),
                io.String.Output(display_name="report", tooltip="File name, measured errors per step, and the trade-off "
                                                                "of attention FLOPs saved against error."),
                io.Image.Output(display_name="image", tooltip="Decisions per step (rows) and layer x head (grey full, "
                                                              "blue coreset, orange sliding) above the trade-off curve."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, sigmas, sampler, **inputs) -> io.NodeOutput:
        v = inputs
        bundle, out, text, image = run_calibration(model, positive, negative, latent, sigmas, sampler, v["cfg"],
                                                   v["noise_seed"], v["add_noise"], v["max_error"], v["filename"],
                                                   geometry_config(v), v["sample_fraction"],
                                                   model_file=model_file_in_prompt(getattr(cls.hidden, "prompt", None),
                                                                                   getattr(cls.hidden, "unique_id", None)))
        return io.NodeOutput(bundle, out, text, image, ui=ui.PreviewText(text))
