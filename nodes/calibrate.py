"""VORTA Calibrate Router: the user's own sampling run -> a router file for their model (and its report)."""
from comfy_api.latest import io, ui

from ..vorta.calibrate import DEFAULT_FRACTION
from ..vorta.comfy.calibration_node import run_calibration
from ..vorta.config import PRESETS, VortaConfig
from .types import CATEGORY, Router

PRESET_OPTIONS = ["auto", *PRESETS, "custom"]


def _triple(name: str, label: str, default, hi: int):
    return [io.Int.Input(f"{name}_{axis}", default=d, min=1, max=hi, step=1,
                         tooltip=f"{label} along {long}. Used when preset = custom.")
            for axis, long, d in zip("thw", ("frames", "height", "width"), default)]


def _config(preset: str, tile_t, tile_h, tile_w, window_t, window_h, window_w, bucket_t, bucket_h, bucket_w, ratio):
    if preset == "auto":
        return None
    if preset == "custom":
        return VortaConfig(tile=(tile_t, tile_h, tile_w), window=(window_t, window_h, window_w),
                           bucket=(bucket_t, bucket_h, bucket_w), ratio=float(ratio))
    return PRESETS[preset].config


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
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1,
                               tooltip="CFG scale, as in your workflow."),
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise."),
                io.Boolean.Input("add_noise", default=True,
                                 tooltip="Off for the second expert of a two-expert model (it continues the first "
                                         "expert's latent, like KSamplerAdvanced)."),
                io.Float.Input("max_error", default=0.2, min=0.0, max=2.0, step=0.01,
                               tooltip="The one knob: per step, layer and head the cheapest branch whose measured error "
                                       "(relative L2 of the attention output vs full attention) is at most this; full "
                                       "attention otherwise. Lower = closer to the original, higher = faster. The report "
                                       "shows speed vs error for other values."),
                io.String.Input("filename", default="calibrated/vorta_router",
                                tooltip="Name under models/vorta ('.safetensors' is added). An existing file is never "
                                        "overwritten: a number is appended."),
                io.Combo.Input("preset", options=PRESET_OPTIONS, default="auto",
                               tooltip="Sparse settings the router is calibrated for (stored in the file; Apply VORTA "
                                       "uses them): auto = the preset for the detected model and resolution, custom = "
                                       "the tile/window/bucket/ratio inputs."),
                *_triple("tile", "Sliding tile size in tokens", (5, 9, 8), 64),
                *_triple("window", "Sliding window in tiles", (3, 3, 3), 31),
                *_triple("bucket", "Coreset bucket size in tokens", (2, 3, 2), 16),
                io.Float.Input("ratio", default=0.5, min=0.0, max=0.95, step=0.05,
                               tooltip="Coreset: share of each bucket pruned. Used when preset = custom."),
                io.Float.Input("sample_fraction", default=DEFAULT_FRACTION, min=0.01, max=1.0, step=0.005,
                               tooltip="Share of query tiles measured per attention call (more = more precise errors, "
                                       "slower; 1/8 costs about 8% of the attention time)."),
            ],
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
    def execute(cls, model, positive, negative, latent, sigmas, sampler, cfg, noise_seed, add_noise, max_error,
                filename, preset, tile_t, tile_h, tile_w, window_t, window_h, window_w, bucket_t, bucket_h, bucket_w,
                ratio, sample_fraction) -> io.NodeOutput:
        config = _config(preset, tile_t, tile_h, tile_w, window_t, window_h, window_w, bucket_t, bucket_h, bucket_w,
                         ratio)
        bundle, out, text, image = run_calibration(model, positive, negative, latent, sigmas, sampler, cfg, noise_seed,
                                                   add_noise, max_error, filename, config, sample_fraction)
        return io.NodeOutput(bundle, out, text, image, ui=ui.PreviewText(text))
