"""The settings inputs shared by Apply VORTA and the routing preview, and their conversion to Settings."""
from comfy_api.latest import io

from ..vorta.comfy.options import build_settings
from ..vorta.comfy.settings import BACKENDS, MODES, PRESET_CHOICES


def _triple(name: str, label: str, default, lo: int, hi: int, what: str):
    return [io.Int.Input(f"{name}_{axis}", default=d, min=lo, max=hi, step=1,
                         tooltip=f"{label} along {long} ({what}). Used when preset = custom.")
            for axis, long, d in zip("thw", ("frames", "height", "width"), default)]


def settings_inputs():
    return [
        io.Combo.Input("mode", options=list(MODES), default="router",
                       tooltip="router: learned per-head routing (needs ROUTER). schedule: training-free, for models without "
                               "routers: full before start_percent, coreset in the early high-noise steps, sliding tile after "
                               "switch_percent. full / sliding / coreset: force one branch for every head (comparison)."),
        io.Combo.Input("preset", options=list(PRESET_CHOICES), default="auto",
                       tooltip="auto: the router's training settings, else the preset for the detected model and resolution. "
                               "custom: use the tile/window/bucket/ratio inputs below. Or a named preset."),
        *_triple("tile", "Sliding tile size in tokens", (5, 9, 8), 1, 64, "latent frames / patches"),
        *_triple("window", "Sliding window in tiles", (3, 3, 3), 1, 31, "odd numbers are centred"),
        *_triple("bucket", "Coreset bucket size in tokens", (2, 3, 2), 1, 16, "one center is always kept"),
        io.Float.Input("ratio", default=0.5, min=0.0, max=0.95, step=0.05,
                       tooltip="Coreset: share of each bucket pruned (0.5 keeps the center and half of the rest). Used when preset = custom."),
        io.Float.Input("tau_sparse", default=0.3, min=0.0, max=1.0, step=0.01,
                       tooltip="Router mode: a head whose top branch probability is below this uses full attention "
                               "(0.3 = official default, never fires; raise above 0.34 for more full heads)."),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Sampling progress where sparse attention starts; steps before it run full attention "
                               "(converted through the model's own sigma schedule)."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Sampling progress where sparse attention ends; steps after it run full attention."),
        io.Float.Input("switch_percent", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="Schedule mode: coreset attention before this point (high noise), sliding tile after it."),
        io.String.Input("dense_blocks", default="",
                        tooltip="Blocks that always use full attention, e.g. '0,1,38-39'. HunyuanVideo counts double "
                                "blocks first, then single blocks (single j = 20 + j for the 13B model)."),
        io.Combo.Input("backend", options=list(BACKENDS), default="auto",
                       tooltip="Sparse-branch kernels: auto (Triton on CUDA GPUs, else PyTorch), triton (error if unavailable), "
                               "torch (reference, slow; for checking)."),
    ]


def settings_from_inputs(**inputs):
    return build_settings(**inputs)
