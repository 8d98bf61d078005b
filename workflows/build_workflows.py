"""Write the UI-format example workflows to workflows/ and example_workflows/ (ComfyUI's template browser).

    python workflows/build_workflows.py

Only core nodes plus ours.  A Note node in each workflow says which file goes where.  The widget order of
VortaApply is the parameter order of ``vorta.comfy.options.build_settings`` (checked by tests/test_workflows.py),
then ``audit_heads``.
"""
from __future__ import annotations

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT_DIRS = [ROOT / "workflows", ROOT / "example_workflows"]


class Graph:
    def __init__(self):
        self.nodes, self.links = [], []

    def node(self, type_, pos, widgets=(), inputs=(), outputs=(), size=(320, 120), title=None):
        nid = len(self.nodes) + 1
        n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size), "flags": {}, "order": nid - 1, "mode": 0,
             "inputs": [{"name": name, "type": t, "link": None} for name, t in inputs],
             "outputs": [{"name": name, "type": t, "links": [], "slot_index": i} for i, (name, t) in enumerate(outputs)],
             "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if title:
            n["title"] = title
        self.nodes.append(n)
        return nid

    def link(self, src, src_slot, dst, dst_name):
        lid = len(self.links) + 1
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        t = s["outputs"][src_slot]["type"]
        slot = next(i for i, inp in enumerate(d["inputs"]) if inp["name"] == dst_name)
        d["inputs"][slot]["link"] = lid
        s["outputs"][src_slot]["links"].append(lid)
        self.links.append([lid, src, src_slot, dst, slot, t])

    def dump(self, extra_note=None):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


def vorta_apply_widgets(mode="router", preset="auto", start=0.0, end=1.0, switch=0.5, dense="", tau=0.3, audit=0):
    # mode, preset, tile_t/h/w, window_t/h/w, bucket_t/h/w, ratio, tau_sparse, start, end, switch, dense_blocks, backend,
    # audit_heads
    return [mode, preset, 5, 9, 8, 3, 3, 3, 2, 3, 2, 0.5, tau, start, end, switch, dense, "auto", audit]


def build(unet, clip_node, clip_widgets, vae, width, height, length, shift, steps, cfg, prompt, note, apply_widgets,
          router=None, guidance=None, fps=16):
    g = Graph()
    g.node("Note", (-420, 0), [note], size=(380, 420), title="Files: where to put them")
    unet_id = g.node("UNETLoader", (0, 0), [unet, "default"], outputs=[("MODEL", "MODEL")])
    clip_id = g.node(clip_node, (0, 160), clip_widgets, outputs=[("CLIP", "CLIP")])
    vae_id = g.node("VAELoader", (0, 330), [vae], outputs=[("VAE", "VAE")])
    shift_id = g.node("ModelSamplingSD3", (360, 0), [shift], inputs=[("model", "MODEL")], outputs=[("MODEL", "MODEL")])
    g.link(unet_id, 0, shift_id, "model")
    apply_inputs = [("model", "MODEL"), ("router", "VORTA_ROUTER")]
    if router:
        router_id = g.node("VortaRouterLoader", (360, 140), [router], outputs=[("ROUTER", "VORTA_ROUTER")])
    apply_id = g.node("VortaApply", (720, 0), apply_widgets, inputs=apply_inputs, outputs=[("MODEL", "MODEL")],
                      size=(360, 520))
    g.link(shift_id, 0, apply_id, "model")
    if router:
        g.link(router_id, 0, apply_id, "router")
    pos_id = g.node("CLIPTextEncode", (360, 300), [prompt], inputs=[("clip", "CLIP")],
                    outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 160), title="Positive prompt")
    neg_id = g.node("CLIPTextEncode", (360, 500), [""], inputs=[("clip", "CLIP")],
                    outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 120), title="Negative prompt")
    g.link(clip_id, 0, pos_id, "clip")
    g.link(clip_id, 0, neg_id, "clip")
    positive = pos_id
    if guidance is not None:
        fg = g.node("FluxGuidance", (720, 560), [guidance], inputs=[("conditioning", "CONDITIONING")],
                    outputs=[("CONDITIONING", "CONDITIONING")])
        g.link(pos_id, 0, fg, "conditioning")
        positive = fg
    latent_id = g.node("EmptyHunyuanLatentVideo", (360, 660), [width, height, length, 1], outputs=[("LATENT", "LATENT")])
    ks = g.node("KSampler", (1120, 0), [42, "fixed", steps, cfg, "uni_pc", "simple", 1.0],
                inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                        ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")], size=(320, 260))
    g.link(apply_id, 0, ks, "model")
    g.link(positive, 0, ks, "positive")
    g.link(neg_id, 0, ks, "negative")
    g.link(latent_id, 0, ks, "latent_image")
    dec = g.node("VAEDecode", (1480, 0), [], inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")])
    g.link(ks, 0, dec, "samples")
    g.link(vae_id, 0, dec, "vae")
    save = g.node("SaveAnimatedWEBP", (1480, 120), ["vorta", fps, False, 90, "default"], inputs=[("images", "IMAGE")],
                  size=(400, 420))
    g.link(dec, 0, save, "images")
    # the routing preview: the whole step x layer x head table for this schedule, before sampling
    sched = g.node("BasicScheduler", (1120, 320), ["simple", steps, 1.0], inputs=[("model", "MODEL")],
                   outputs=[("SIGMAS", "SIGMAS")])
    g.link(apply_id, 0, sched, "model")
    prev = g.node("VortaRoutingPreview", (1120, 460), [], inputs=[("model", "MODEL"), ("sigmas", "SIGMAS"),
                                                                  ("router", "VORTA_ROUTER"), ("latent", "LATENT")],
                  outputs=[("heat map", "IMAGE"), ("summary", "STRING")])
    g.link(apply_id, 0, prev, "model")
    g.link(sched, 0, prev, "sigmas")
    g.link(latent_id, 0, prev, "latent")
    img = g.node("PreviewImage", (1480, 560), [], inputs=[("images", "IMAGE")], size=(400, 300))
    g.link(prev, 0, img, "images")
    return g.dump()


PROMPT = "A red fox trotting through fresh snow in a birch forest at sunrise, cinematic, shallow depth of field."

WAN14_NOTE = """VORTA on Wan2.1 T2V 14B (official router, 720p)

ComfyUI/models/diffusion_models/  wan2.1_t2v_14B_bf16.safetensors (or the fp8 file)
ComfyUI/models/text_encoders/     umt5_xxl_fp8_e4m3fn_scaled.safetensors
ComfyUI/models/vae/               wan_2.1_vae.safetensors
ComfyUI/models/vorta/             the official router: copy the Hugging Face folder
    Wenhao-Sun/VORTA/wan-14B as it is (pick .../train/ckpt/step-000100/router.pt in the loader),
    or convert it once:
    python -m comfyui_vorta.vorta.convert wan-14B/train/ckpt/step-000100/router.pt ComfyUI/models/vorta/wan2.1-t2v-14b.safetensors

preset 'auto' uses the settings the router was trained with (tile 5x9x8, window 3x3x3, bucket 2x3x2).
The Routing Preview shows which branch every head takes at every step before you sample.
Any attention backend you already use (SageAttention, ...) still serves full heads."""

HV_NOTE = """VORTA on HunyuanVideo T2V (official router, 720p)

ComfyUI/models/diffusion_models/  hunyuan_video_t2v_720p_bf16.safetensors
ComfyUI/models/text_encoders/     clip_l.safetensors, llava_llama3_fp8_scaled.safetensors
ComfyUI/models/vae/               hunyuan_video_vae_bf16.safetensors
ComfyUI/models/vorta/             the official router: copy Wenhao-Sun/VORTA/hunyuan as it is
    (pick .../train/ckpt/step-000100/router.pt), or convert it to hunyuanvideo-t2v.safetensors with
    python -m comfyui_vorta.vorta.convert

preset 'auto' = the training settings (tile 6x9x8, window 3x3x3, bucket 2x3x2). Text tokens stay global.
dense_blocks counts double blocks 0-19 then single blocks 20-59."""

WAN13_NOTE = """VORTA on Wan2.1 T2V 1.3B (schedule mode: no router needed, 480p)

ComfyUI/models/diffusion_models/  wan2.1_t2v_1.3B_bf16.safetensors
ComfyUI/models/text_encoders/     umt5_xxl_fp8_e4m3fn_scaled.safetensors
ComfyUI/models/vae/               wan_2.1_vae.safetensors

No VORTA router was released for the 1.3B model, so this uses the training-free schedule:
full attention for the first 10 % of the steps, coreset attention until 50 %, sliding tile after.
preset 'auto' picks wan2.1-1.3b-480p (tile 4x6x8). Compare with mode 'full' to judge quality."""


def main():
    workflows = {
        "vorta_wan2.1_t2v_14b_router": build(
            "wan2.1_t2v_14B_bf16.safetensors", "CLIPLoader", ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"],
            "wan_2.1_vae.safetensors", 1280, 720, 81, 8.0, 30, 5.0, PROMPT, WAN14_NOTE,
            vorta_apply_widgets("router"), router="wan2.1-t2v-14b.safetensors"),
        "vorta_hunyuanvideo_t2v_router": build(
            "hunyuan_video_t2v_720p_bf16.safetensors", "DualCLIPLoader",
            ["clip_l.safetensors", "llava_llama3_fp8_scaled.safetensors", "hunyuan_video", "default"],
            "hunyuan_video_vae_bf16.safetensors", 1280, 720, 117, 7.0, 50, 1.0, PROMPT, HV_NOTE,
            vorta_apply_widgets("router"), router="hunyuanvideo-t2v.safetensors", guidance=6.0, fps=24),
        "vorta_wan2.1_t2v_1.3b_schedule": build(
            "wan2.1_t2v_1.3B_bf16.safetensors", "CLIPLoader", ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"],
            "wan_2.1_vae.safetensors", 832, 480, 81, 8.0, 30, 6.0, PROMPT, WAN13_NOTE,
            vorta_apply_widgets("schedule", start=0.1, switch=0.5)),
    }
    for d in OUT_DIRS:
        d.mkdir(exist_ok=True)
        for name, wf in workflows.items():
            (d / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
    return workflows


if __name__ == "__main__":
    main()
