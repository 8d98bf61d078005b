"""Write the example workflows (UI format) and their template thumbnails to ``example_workflows/``.

    python tools/build_workflows.py            # (re)write the folder
    python tools/build_workflows.py --check    # exit 1 when the committed files differ from this output

ComfyUI's template browser lists ``example_workflows/*.json`` under the pack's folder name, titled by file name,
with ``<name>.jpg`` beside it as the card's thumbnail; so the names are written for people.  Each loader node
carries ``properties.models`` (name, url, directory) so ComfyUI offers the missing files for download.
Only core nodes plus ours.  This script is a development tool: it is not shipped (``.comfyignore``).
"""
from __future__ import annotations

import argparse
import io
import json
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "example_workflows"
THUMB_SIZE = (512, 384)

from comfyui_vorta.vorta.comfy.setting_specs import APPLY, CALIBRATE, DEFAULTS, GEOMETRY  # noqa: E402
from comfyui_vorta.vorta.comfy.settings import describe_config  # noqa: E402
from comfyui_vorta.vorta.config import PRESETS  # noqa: E402


def widget_values(specs, changes: Dict[str, object]) -> list:
    """A node's widget values in the order it declares its inputs: the declared defaults with ``changes`` (a seed is
    followed by its control widget, saved as 'fixed')."""
    unknown = set(changes) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"no input {sorted(unknown)}")
    values = []
    for s in specs:
        values.append(changes.get(s.name, s.default))
        if s.control_after_generate:
            values.append("fixed")
    return values

# ------------------------------------------------------------------------------------- model files (downloads)
WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
HUNYUAN = "https://huggingface.co/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"
ROUTERS = "https://huggingface.co/Wenhao-Sun/VORTA/resolve/main"


@dataclass(frozen=True)
class ModelFile:
    """One file a workflow needs: the widget value (file name), where ComfyUI looks for it, and its download."""

    name: str
    directory: str
    url: str

    def entry(self) -> dict:
        return {"name": self.name, "url": self.url, "directory": self.directory}


UMT5 = ModelFile("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
                 f"{WAN21}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")
WAN21_VAE = ModelFile("wan_2.1_vae.safetensors", "vae", f"{WAN21}/vae/wan_2.1_vae.safetensors")
WAN13 = ModelFile("wan2.1_t2v_1.3B_bf16.safetensors", "diffusion_models",
                  f"{WAN21}/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors")
# The official router files are both called router.pt; a workflow names them apart.  Any name works: the loader
# reads the model family from the tensors, and without config.json the official training settings.
WAN14_ROUTER = ModelFile("vorta_wan2.1_t2v_14b_router.pt", "vorta",
                         f"{ROUTERS}/wan-14B/train/ckpt/step-000100/router.pt")
HUNYUAN_ROUTER = ModelFile("vorta_hunyuanvideo_t2v_router.pt", "vorta",
                           f"{ROUTERS}/hunyuan/train/ckpt/step-000100/router.pt")


# ------------------------------------------------------------------------------------------------ the graph
class Graph:
    """A UI-format (LiteGraph) workflow, built node by node."""

    def __init__(self):
        self.nodes: List[dict] = []
        self.links: List[list] = []

    def node(self, type_: str, pos, widgets=(), inputs=(), outputs=(), size=(320, 120), title=None,
             models: Sequence[ModelFile] = ()) -> int:
        nid = len(self.nodes) + 1
        props = {"Node name for S&R": type_}
        if models:
            props["models"] = [m.entry() for m in models]
        n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size), "flags": {}, "order": nid - 1, "mode": 0,
             "inputs": [{"name": name, "type": t, "link": None} for name, t in inputs],
             "outputs": [{"name": name, "type": t, "links": [], "slot_index": i} for i, (name, t) in enumerate(outputs)],
             "properties": props, "widgets_values": list(widgets)}
        if title:
            n["title"] = title
        self.nodes.append(n)
        return nid

    def link(self, src: int, src_slot: int, dst: int, dst_name: str) -> None:
        lid = len(self.links) + 1
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        t = s["outputs"][src_slot]["type"]
        slot = next(i for i, inp in enumerate(d["inputs"]) if inp["name"] == dst_name)
        d["inputs"][slot]["link"] = lid
        s["outputs"][src_slot]["links"].append(lid)
        self.links.append([lid, src, src_slot, dst, slot, t])

    def dump(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [480, 40]}},
                "version": 0.4}


# ------------------------------------------------------------------------------------------- the workflows
@dataclass(frozen=True)
class Workflow:
    """What differs between the example workflows."""

    name: str  # file name and template title (short: the template card truncates after ~30 characters)
    model: str  # short model name for the thumbnail
    mode_line: str  # thumbnail subtitle
    unet: ModelFile
    clip_node: str
    clip_widgets: Tuple
    clips: Tuple[ModelFile, ...]
    vae: ModelFile
    latent_node: str
    size: Tuple[int, int, int]  # width, height, frames
    shift: float
    steps: int
    cfg: float
    note: str
    apply: Dict[str, object]  # Apply VORTA inputs that differ from their defaults
    settings: Optional[Dict[str, object]] = None  # a VORTA Settings node with these inputs, when set
    # a VORTA Calibrate Router node (these inputs; its cfg, seed, sampler and schedule are the KSampler's) whose
    # ROUTER feeds Apply VORTA, in place of VORTA Router Loader and the routing preview, when set
    calibrate: Optional[Dict[str, object]] = None
    router: Optional[ModelFile] = None
    guidance: Optional[float] = None
    fps: int = 16
    prompt: str = "A red fox trotting through fresh snow in a birch forest at sunrise, cinematic, shallow depth of field."
    extra: Dict[str, str] = field(default_factory=dict)
    seed: int = 42
    sampler: str = "uni_pc"
    scheduler: str = "simple"


def _loaders(g: Graph, w: Workflow) -> Tuple[int, int, int]:
    """The note, the model files and the shift: (clip, vae, shifted model) node ids."""
    g.node("MarkdownNote", (-460, 0), [w.note], size=(420, 640), title="Read me: files and settings")
    unet_id = g.node("UNETLoader", (0, 0), [w.unet.name, "default"], outputs=[("MODEL", "MODEL")], size=(320, 90),
                     models=[w.unet])
    clip_id = g.node(w.clip_node, (0, 140), w.clip_widgets, outputs=[("CLIP", "CLIP")], size=(320, 110),
                     models=w.clips)
    vae_id = g.node("VAELoader", (0, 300), [w.vae.name], outputs=[("VAE", "VAE")], size=(320, 60), models=[w.vae])
    shift_id = g.node("ModelSamplingSD3", (360, 0), [w.shift], inputs=[("model", "MODEL")],
                      outputs=[("MODEL", "MODEL")], size=(300, 60))
    g.link(unet_id, 0, shift_id, "model")
    return clip_id, vae_id, shift_id


def _prompts(g: Graph, w: Workflow, clip_id: int) -> Tuple[int, int]:
    pos_id = g.node("CLIPTextEncode", (0, 420), [w.prompt], inputs=[("clip", "CLIP")],
                    outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 160), title="Positive prompt")
    neg_id = g.node("CLIPTextEncode", (0, 620), [""], inputs=[("clip", "CLIP")],
                    outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 100), title="Negative prompt")
    g.link(clip_id, 0, pos_id, "clip")
    g.link(clip_id, 0, neg_id, "clip")
    return pos_id, neg_id


def _generate(g: Graph, w: Workflow, x: int, model: int, positive: int, negative: int, latent: int, vae: int) -> None:
    """KSampler -> VAE Decode -> Save Animated WEBP, from column ``x``."""
    ks = g.node("KSampler", (x, 0), [w.seed, "fixed", w.steps, w.cfg, w.sampler, w.scheduler, 1.0],
                inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                        ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")], size=(320, 270))
    g.link(model, 0, ks, "model")
    g.link(positive, 0, ks, "positive")
    g.link(negative, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    dec = g.node("VAEDecode", (x + 360, 0), [], inputs=[("samples", "LATENT"), ("vae", "VAE")],
                 outputs=[("IMAGE", "IMAGE")], size=(220, 50))
    g.link(ks, 0, dec, "samples")
    g.link(vae, 0, dec, "vae")
    save = g.node("SaveAnimatedWEBP", (x + 360, 100), ["vorta", w.fps, False, 90, "default"],
                  inputs=[("images", "IMAGE")], size=(420, 440))
    g.link(dec, 0, save, "images")


def build(w: Workflow) -> dict:
    if w.calibrate is not None:
        return build_calibrate(w)
    g = Graph()
    clip_id, vae_id, shift_id = _loaders(g, w)
    apply_inputs = [("model", "MODEL"), ("router", "VORTA_ROUTER")]
    router_id = None
    if w.router is not None:
        router_id = g.node("VortaRouterLoader", (360, 110), [w.router.name], outputs=[("ROUTER", "VORTA_ROUTER")],
                           size=(300, 60), models=[w.router])
    apply_inputs.append(("settings", "VORTA_SETTINGS"))
    apply_id = g.node("VortaApply", (720, 0), widget_values(APPLY, w.apply), inputs=apply_inputs,
                      outputs=[("MODEL", "MODEL")], size=(360, 230))
    g.link(shift_id, 0, apply_id, "model")
    if router_id is not None:
        g.link(router_id, 0, apply_id, "router")
    if w.settings is not None:
        settings_id = g.node("VortaSettings", (360, 110), widget_values(GEOMETRY, w.settings),
                             outputs=[("settings", "VORTA_SETTINGS")], size=(300, 420))
        g.link(settings_id, 0, apply_id, "settings")
    pos_id, neg_id = _prompts(g, w, clip_id)
    positive = pos_id
    if w.guidance is not None:
        fg = g.node("FluxGuidance", (380, 420), [w.guidance], inputs=[("conditioning", "CONDITIONING")],
                    outputs=[("CONDITIONING", "CONDITIONING")], size=(280, 60))
        g.link(pos_id, 0, fg, "conditioning")
        positive = fg
    width, height, frames = w.size
    latent_inputs = [("vae", "VAE"), ("start_image", "IMAGE")] if w.latent_node == "Wan22ImageToVideoLatent" else []
    latent_id = g.node(w.latent_node, (380, 600), [width, height, frames, 1], inputs=latent_inputs,
                       outputs=[("LATENT", "LATENT")], size=(280, 150))
    if latent_inputs:
        g.link(vae_id, 0, latent_id, "vae")
    _generate(g, w, 1120, apply_id, positive, neg_id, latent_id, vae_id)
    # the routing preview: which branch every head takes at every step of this schedule, before sampling
    sched = g.node("BasicScheduler", (720, 300), [w.scheduler, w.steps, 1.0], inputs=[("model", "MODEL")],
                   outputs=[("SIGMAS", "SIGMAS")], size=(360, 110))
    g.link(apply_id, 0, sched, "model")
    prev = g.node("VortaRoutingPreview", (720, 460), [], inputs=[("model", "MODEL"), ("sigmas", "SIGMAS"),
                                                                 ("router", "VORTA_ROUTER"), ("latent", "LATENT")],
                  outputs=[("heat map", "IMAGE"), ("summary", "STRING")], size=(360, 120))
    g.link(apply_id, 0, prev, "model")
    g.link(sched, 0, prev, "sigmas")
    g.link(latent_id, 0, prev, "latent")
    img = g.node("PreviewImage", (1120, 320), [], inputs=[("images", "IMAGE")], size=(320, 320),
                 title="Routing heat map")
    g.link(prev, 0, img, "images")
    return g.dump()


def build_calibrate(w: Workflow) -> dict:
    """Calibrate, then generate: VORTA Calibrate Router samples once with the KSampler's model, prompts, latent, seed,
    CFG, sampler and schedule, saves the router, and hands it to Apply VORTA for the KSampler."""
    g = Graph()
    clip_id, vae_id, shift_id = _loaders(g, w)
    pos_id, neg_id = _prompts(g, w, clip_id)
    width, height, frames = w.size
    latent_id = g.node(w.latent_node, (380, 600), [width, height, frames, 1], outputs=[("LATENT", "LATENT")],
                       size=(280, 150))
    sched = g.node("BasicScheduler", (360, 110), [w.scheduler, w.steps, 1.0], inputs=[("model", "MODEL")],
                   outputs=[("SIGMAS", "SIGMAS")], size=(300, 110))
    g.link(shift_id, 0, sched, "model")
    select = g.node("KSamplerSelect", (360, 270), [w.sampler], outputs=[("SAMPLER", "SAMPLER")], size=(300, 60))
    cal = g.node("VortaCalibrateRouter", (720, 0),
                 widget_values(CALIBRATE, {"cfg": w.cfg, "noise_seed": w.seed, **w.calibrate}),
                 inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                         ("latent", "LATENT"), ("sigmas", "SIGMAS"), ("sampler", "SAMPLER")],
                 outputs=[("ROUTER", "VORTA_ROUTER"), ("LATENT", "LATENT"), ("report", "STRING"), ("image", "IMAGE")],
                 size=(420, 560))
    for name, src in (("model", shift_id), ("positive", pos_id), ("negative", neg_id), ("latent", latent_id),
                      ("sigmas", sched), ("sampler", select)):
        g.link(src, 0, cal, name)
    img = g.node("PreviewImage", (720, 600), [], inputs=[("images", "IMAGE")], size=(420, 360),
                 title="Calibration: decisions and trade-off")
    g.link(cal, 3, img, "images")
    apply_id = g.node("VortaApply", (1180, 0), widget_values(APPLY, w.apply),
                      inputs=[("model", "MODEL"), ("router", "VORTA_ROUTER"), ("settings", "VORTA_SETTINGS")],
                      outputs=[("MODEL", "MODEL")], size=(360, 230))
    g.link(shift_id, 0, apply_id, "model")
    g.link(cal, 0, apply_id, "router")
    _generate(g, w, 1580, apply_id, pos_id, neg_id, latent_id, vae_id)
    return g.dump()


def _files(*files: ModelFile) -> str:
    return "\n".join(f"- `models/{f.directory}/` {f.name}" for f in files)


# Wan2.1 T2V 1.3B at 480p, 81 frames (the schedule and the calibration examples)
WAN13_T2V_480P = dict(model="Wan2.1 T2V 1.3B", unet=WAN13, clip_node="CLIPLoader",
                      clip_widgets=(UMT5.name, "wan", "default"), clips=(UMT5,), vae=WAN21_VAE, latent_node="EmptyHunyuanLatentVideo", size=(832, 480, 81),
                      shift=8.0, steps=30, cfg=6.0)

SCHEDULE_START = 0.1  # start_percent of the schedule workflows: full attention for the first steps
WAN22_SWITCH = 0.4  # the 5B workflow's coreset-to-sliding switch (VORTA Settings)


def _geometry(preset: str) -> str:
    """A preset's geometry as the notes show it, read from the preset itself."""
    return describe_config(PRESETS[preset].config)


def _pct(x: float) -> str:
    return f"{x:.0%}".replace("%", " %")


_DOWNLOADS = ("ComfyUI offers the missing files for download when the workflow opens (a browser download lands "
              "in your downloads folder: move it to the folder named here).")
_ROUTER_NOTE = ("The official router is `router.pt` in the Hugging Face repository Wenhao-Sun/VORTA ({folder}/train/"
                "ckpt/step-000100/). Put it in `models/vorta/` under any name and pick it in **VORTA Router Loader**; "
                "its `config.json` is optional (without it the official training settings are used). No conversion "
                "is needed.")
_PREVIEW = ("**VORTA Routing Preview** shows which branch every head takes at every step before you sample "
            "(grey full, blue coreset, orange sliding tile); its summary names the settings actually used.")
_SPEED = "Attention backends you already use (SageAttention, ...) keep serving the full-attention heads."

WORKFLOWS: List[Workflow] = [
    Workflow(
        name="VORTA Wan2.1 14B router", model="Wan2.1 T2V 14B", mode_line="learned router, 720p",
        unet=ModelFile("wan2.1_t2v_14B_bf16.safetensors", "diffusion_models",
                       f"{WAN21}/diffusion_models/wan2.1_t2v_14B_bf16.safetensors"),
        clip_node="CLIPLoader", clip_widgets=(UMT5.name, "wan", "default"), clips=(UMT5,), vae=WAN21_VAE,
        latent_node="EmptyHunyuanLatentVideo", size=(1280, 720, 81), shift=8.0, steps=30, cfg=5.0,
        router=WAN14_ROUTER, apply={},
        note="\n\n".join([
            "## VORTA on Wan2.1 T2V 14B\nLearned per-head routing with the official router, 720p.",
            "### Files\n" + _files(WAN14_ROUTER, ModelFile("wan2.1_t2v_14B_bf16.safetensors", "diffusion_models", ""),
                                   UMT5, WAN21_VAE),
            _DOWNLOADS, _ROUTER_NOTE.format(folder="wan-14B"),
            "### Settings\nMode `auto` uses the router because one is connected, with the settings it was trained "
            f"with ({_geometry('wan2.1-14b-720p')}).", _PREVIEW, _SPEED])),
    Workflow(
        name="VORTA HunyuanVideo router", model="HunyuanVideo T2V", mode_line="learned router, 720p",
        unet=ModelFile("hunyuan_video_t2v_720p_bf16.safetensors", "diffusion_models",
                       f"{HUNYUAN}/diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors"),
        clip_node="DualCLIPLoader",
        clip_widgets=("clip_l.safetensors", "llava_llama3_fp8_scaled.safetensors", "hunyuan_video", "default"),
        clips=(ModelFile("clip_l.safetensors", "text_encoders", f"{HUNYUAN}/text_encoders/clip_l.safetensors"),
               ModelFile("llava_llama3_fp8_scaled.safetensors", "text_encoders",
                         f"{HUNYUAN}/text_encoders/llava_llama3_fp8_scaled.safetensors")),
        vae=ModelFile("hunyuan_video_vae_bf16.safetensors", "vae", f"{HUNYUAN}/vae/hunyuan_video_vae_bf16.safetensors"),
        latent_node="EmptyHunyuanLatentVideo", size=(1280, 720, 117), shift=7.0, steps=50, cfg=1.0,
        router=HUNYUAN_ROUTER, guidance=6.0, fps=24, apply={},
        note="\n\n".join([
            "## VORTA on HunyuanVideo T2V\nLearned per-head routing with the official router, 720p.",
            "### Files\n" + _files(HUNYUAN_ROUTER,
                                   ModelFile("hunyuan_video_t2v_720p_bf16.safetensors", "diffusion_models", ""),
                                   ModelFile("clip_l.safetensors", "text_encoders", ""),
                                   ModelFile("llava_llama3_fp8_scaled.safetensors", "text_encoders", ""),
                                   ModelFile("hunyuan_video_vae_bf16.safetensors", "vae", "")),
            _DOWNLOADS, _ROUTER_NOTE.format(folder="hunyuan"),
            f"### Settings\nMode `auto` uses the router with its training settings ({_geometry('hunyuan-720p')}). "
            "Text tokens stay global. `dense_blocks` counts the 20 double blocks first (0-19), then the "
            "single blocks (20-59).", _PREVIEW, _SPEED])),
    Workflow(
        name="VORTA Wan2.1 1.3B schedule", mode_line="training-free schedule, 480p", **WAN13_T2V_480P,
        apply={"start_percent": SCHEDULE_START},
        note="\n\n".join([
            "## VORTA on Wan2.1 T2V 1.3B\nNo router was released for this model: the training-free schedule.",
            "### Files\n" + _files(WAN13, UMT5, WAN21_VAE),
            _DOWNLOADS,
            "### Settings\nMode `auto` runs the schedule because no router is connected: full attention for the "
            f"first {_pct(SCHEDULE_START)} of the steps (`start_percent`), coreset attention until `switch_percent` "
            f"({_pct(DEFAULTS['switch_percent'])}), sliding tile after. The geometry is the preset for the detected "
            f"model (wan2.1-1.3b-480p: {_geometry('wan2.1-1.3b-480p')}). Compare with mode `full` to judge quality.",
            _PREVIEW])),
    Workflow(
        name="VORTA Wan2.2 5B schedule", model="Wan2.2 TI2V 5B",
        mode_line="training-free schedule, 720p",
        unet=ModelFile("wan2.2_ti2v_5B_fp16.safetensors", "diffusion_models",
                       f"{WAN22}/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors"),
        clip_node="CLIPLoader", clip_widgets=(UMT5.name, "wan", "default"), clips=(UMT5,),
        vae=ModelFile("wan2.2_vae.safetensors", "vae", f"{WAN22}/vae/wan2.2_vae.safetensors"),
        latent_node="Wan22ImageToVideoLatent", size=(1280, 704, 121), shift=8.0, steps=20, cfg=5.0, fps=24,
        apply={"start_percent": SCHEDULE_START}, settings={"preset": "wan2.2-5b-720p", "switch_percent": WAN22_SWITCH},
        note="\n\n".join([
            "## VORTA on Wan2.2 TI2V 5B\nText to video with the 5B model; no router was released for it, so the "
            "training-free schedule runs.",
            "### Files\n" + _files(ModelFile("wan2.2_ti2v_5B_fp16.safetensors", "diffusion_models", ""), UMT5,
                                   ModelFile("wan2.2_vae.safetensors", "vae", "")),
            _DOWNLOADS,
            f"### Settings\nMode `auto` runs the schedule: full attention for the first {_pct(SCHEDULE_START)} of "
            f"the steps, coreset until {_pct(WAN22_SWITCH)}, sliding tile after. **VORTA Settings** picks the geometry "
            f"(preset wan2.2-5b-720p: {_geometry('wan2.2-5b-720p')} on the "
            f"{'x'.join(map(str, PRESETS['wan2.2-5b-720p'].latent_grid))} token grid) and the coreset-to-sliding "
            "switch; without it Apply VORTA uses the preset for the detected model. For image to video, connect a "
            "start image to the latent node.",
            _PREVIEW])),
    Workflow(
        name="VORTA Wan2.1 1.3B calibrate", mode_line="calibrate, then generate, 480p", **WAN13_T2V_480P,
        apply={}, calibrate={"filename": "calibrated/wan2.1_t2v_1.3B_480p"},
        note="\n\n".join([
            "## Calibrate a router, then generate\nNo router was released for Wan2.1 T2V 1.3B: **VORTA Calibrate "
            "Router** makes one from your model, prompts, resolution and sampler, and Apply VORTA generates with it.",
            "### Files\n" + _files(WAN13, UMT5, WAN21_VAE),
            _DOWNLOADS,
            "### What happens\nThe calibration samples once with full attention (about one generation's time) and "
            "measures, per step, layer and head, how far sliding-tile and coreset attention are from full. It saves "
            "the router to `models/vorta/calibrated/` (a number is appended rather than overwrite a file) and passes "
            "it to Apply VORTA, whose mode `auto` routes with it. Its report (on the node) and image show the "
            "decisions and the speed-against-error trade-off.",
            "### Settings\nThe calibration's seed, CFG, sampler, scheduler and steps equal the KSampler's: keep them "
            "so. `max_error` is the one knob (lower: closer to full attention; higher: faster). Next time, load the "
            "saved file with **VORTA Router Loader** into Apply VORTA's router input and remove the calibration "
            "nodes."])),
]


# ----------------------------------------------------------------------------------------------- thumbnails
def thumbnail(w: Workflow) -> bytes:
    """A template card: model, mode, and the branch colours of the routing heat map (JPEG)."""
    from PIL import Image, ImageDraw, ImageFont

    from comfyui_vorta.vorta.comfy.heatmap import COLORS

    img = Image.new("RGB", THUMB_SIZE, (24, 26, 31))
    draw = ImageDraw.Draw(img)

    def font(size):
        return ImageFont.load_default(size=size)

    # a band of heads over steps in the pack's heat-map colours: a router = mixed per head, schedule = phases
    top, rows, cols = 190, 10, 32
    cw, rh = (THUMB_SIZE[0] - 64) // cols, 14
    for r in range(rows):
        for c in range(cols):
            if "schedule" not in w.mode_line:
                b = (r * 7 + c * 13 + (c // 4) * 5) % 10
                branch = 0 if b == 0 else (1 if b < 5 else 2)
            else:
                branch = 0 if r < 1 else (1 if r < 4 else 2)
            x0, y0 = 32 + c * cw, top + r * rh
            draw.rectangle((x0, y0, x0 + cw - 2, y0 + rh - 2), fill=COLORS[branch])
    draw.text((32, 36), "VORTA", font=font(28), fill=(245, 166, 35))
    draw.text((32, 80), w.model, font=font(40), fill=(240, 240, 240))
    draw.text((32, 134), w.mode_line, font=font(24), fill=(190, 190, 190))
    x = 32
    for branch, label in ((0, "full"), (1, "coreset"), (2, "sliding tile")):
        draw.rectangle((x, 346, x + 16, 362), fill=COLORS[branch])
        draw.text((x + 24, 342), label, font=font(20), fill=(220, 220, 220))
        x += 150
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def render() -> Dict[str, bytes]:
    """Every file of ``example_workflows/`` by name, as this script writes it."""
    out = {}
    for w in WORKFLOWS:
        out[f"{w.name}.json"] = (json.dumps(build(w), indent=1) + "\n").encode()
        out[f"{w.name}.jpg"] = thumbnail(w)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = ap.parse_args(argv)
    files = render()
    if args.check:
        on_disk = {p.name for p in OUT_DIR.iterdir()}
        stale = sorted(on_disk - set(files))
        differ = sorted(n for n, data in files.items() if n.endswith(".json")
                        and (not (OUT_DIR / n).is_file() or (OUT_DIR / n).read_bytes() != data))
        missing = sorted(n for n in files if not (OUT_DIR / n).is_file())
        for what, names in (("not generated", stale), ("differ", differ), ("missing", missing)):
            if names:
                print(f"{what}: {', '.join(names)}", file=sys.stderr)
        return 1 if stale or differ or missing else 0
    OUT_DIR.mkdir(exist_ok=True)
    for p in OUT_DIR.iterdir():
        if p.name not in files:
            p.unlink()
    for name, data in files.items():
        (OUT_DIR / name).write_bytes(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
