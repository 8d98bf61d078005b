"""End-to-end step time inside ComfyUI: real model architectures, random bf16 weights, patched like a workflow.

    python bench/e2e.py --model wan14b [--res 720p] [--frames 81] [--md out.md]
    python bench/e2e.py --model wan1.3b,wan14b,hunyuan --md e2e.md   # one process, in order
    python bench/e2e.py --model wan,hunyuan --tiny                   # CPU smoke run

What it does (issue 5):

* **Model**: ComfyUI (``COMFYUI_PATH``) builds the diffusion model from the ``unet_config`` that
  ``comfy.model_detection`` would detect for the real checkpoint, through the same calls as
  ``comfy.sd.load_diffusion_model_state_dict`` (``model_config_from_unet_config`` -> ``set_inference_dtype`` ->
  ``get_model(device=cuda)`` -> ``ModelPatcher``), with ComfyUI's ``disable_weight_init`` operations so the
  parameters are created uninitialised on the GPU; they are then filled in place (normal * 0.02, norm scales 1).
  No checkpoint is read or written. Step time does not depend on the weight values.
* **Patch**: the Apply VORTA node's own ``execute`` (``nodes/apply.py``) with the node's defaults, as a workflow
  would (``--no-node`` falls back to the two lines it runs: ``build_settings`` + ``apply_vorta``).
* **Step**: ComfyUI's ``CFGGuider.sample`` with a ``KSAMPLER`` whose sampler function calls the wrapped model at
  chosen sigmas of a 50-step ``simple`` schedule and times each call: one call = one denoising step as a sampler
  runs it (cond + uncond through ``calc_cond_batch``, ComfyUI batching them when its memory rule allows; the
  batch actually used is reported), CFG combine included. OUTER_SAMPLE / DIFFUSION_MODEL wrappers, object
  patches and the attention override all run exactly as in a workflow.
* **Configurations**: ``dense`` (the unpatched model on ComfyUI's attention), VORTA forced ``full`` /
  ``sliding`` / ``coreset``, ``mix`` (a fixed random per-(layer, head) assignment with exactly 50 % sliding /
  48 % coreset / 2 % full, delivered as a router file whose decisions are constant: zero weights, one-hot
  biases -- router mode runs unchanged) and ``schedule`` (the training-free mode over a 50-step run: the
  distinct per-step decision tables from the routing preview, one representative step timed per table, or the
  forced configuration's time reused when the table is identical to it, weighted by the number of steps).
* **Attention share**: every timed step records CUDA events (no synchronisation inside the step) around each
  attention call -- the override ComfyUI already supports for dense, VORTA's own attention entry point and its
  coreset / sliding branch callables for the patched model. Self-attention, cross-attention and other attention
  (HunyuanVideo's token refiner) are separated by shape; the rest of the step is "rest of the model".
  The ``mix`` configuration also runs one step without instrumentation to show what it costs.
* **Memory**: ``torch.cuda.max_memory_allocated`` over each configuration's run (weights included), reset
  between configurations.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import logging
import os
import pathlib
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from comfyui_vorta.vorta.config import BRANCHES, CORESET, FULL, SLIDING, VortaConfig, preset_for
from comfyui_vorta.vorta.geometry import grid_from_latent
from comfyui_vorta.vorta.router import RouterSet, official_layer_names


SCHEDULE_STEPS = 50
MIX = {"sliding": 0.50, "coreset": 0.48, "full": 0.02}
TINY_CFG = dict(tile_t=1, tile_h=2, tile_w=2, window_t=3, window_h=3, window_w=3, bucket_t=1, bucket_h=2, bucket_w=2,
                ratio=0.5)


# ----------------------------------------------------------------------------------------------- models
@dataclass
class Spec:
    name: str
    family: str
    title: str
    unet: dict  # what comfy.model_detection would detect from the real checkpoint
    res: Tuple[int, int]  # (height, width) of the default resolution
    frames: int
    channels: int  # latent channels
    spatial: int  # VAE spatial compression
    text: int  # text tokens of the conditioning
    cfg: float = 5.0
    full_warmup: bool = False  # one full-size warm-up step for dense configurations too (cheap models only)
    budget_s: float = 20.0  # per configuration: timed repeats stop once this much time was spent (at least one)
    clean_step: bool = True  # mix: one extra step without the timing events (what instrumentation costs)


def _wan_unet(dim, ffn, heads, layers, in_dim=16, out_dim=16):
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": dim, "out_dim": out_dim, "num_heads": heads,
            "ffn_dim": ffn, "num_layers": layers, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
            "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": in_dim}


def _hv_unet(hidden, heads, double, single):
    return {"image_model": "hunyuan_video", "in_channels": 16, "patch_size": [1, 2, 2], "out_channels": 16,
            "vec_in_dim": 768, "axes_dim": [16, 56, 56], "meanflow": False, "context_in_dim": 4096,
            "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": double,
            "depth_single_blocks": single, "theta": 256, "qkv_bias": True, "byt5": False, "guidance_embed": True}


MODELS: Dict[str, Spec] = {
    "wan1.3b": Spec("wan1.3b", "wan", "Wan2.1-T2V-1.3B", _wan_unet(1536, 8960, 12, 30), (480, 832), 81, 16, 8, 512,
                    full_warmup=True, budget_s=5.0),
    "wan14b": Spec("wan14b", "wan", "Wan2.1-T2V-14B", _wan_unet(5120, 13824, 40, 40), (720, 1280), 81, 16, 8, 512),
    # Wan2.2 TI2V-5B: 48-channel latent, 16x spatial compression; its 720p is 1280x704
    "wan5b": Spec("wan5b", "wan", "Wan2.2-TI2V-5B", _wan_unet(3072, 14336, 24, 30, 48, 48), (704, 1280), 121, 48, 16,
                  512, budget_s=15.0, clean_step=False),
    "hunyuan": Spec("hunyuan", "hunyuan", "HunyuanVideo-T2V-13B", _hv_unet(3072, 24, 20, 40), (720, 1280), 129, 16, 8,
                    80, clean_step=False),
}
TINY: Dict[str, Spec] = {
    "wan": Spec("wan", "wan", "tiny Wan", _wan_unet(512, 512, 4, 3), (64, 80), 9, 16, 8, 16, full_warmup=True,
                budget_s=0.0),
    "wan5b": Spec("wan5b", "wan", "tiny Wan2.2-5B", _wan_unet(512, 512, 4, 3, 48, 48), (128, 160), 9, 48, 16, 16,
                  full_warmup=True, budget_s=0.0),
    "hunyuan": Spec("hunyuan", "hunyuan", "tiny HunyuanVideo", _hv_unet(512, 4, 2, 2), (64, 80), 9, 16, 8, 8,
                    full_warmup=True, budget_s=0.0),
}
RES = {"480p": (480, 832), "720p": (720, 1280)}


def parse_res(text: Optional[str], spec: Spec) -> Tuple[int, int]:
    if not text:
        return spec.res
    if text == "720p" and spec.name == "wan5b":
        return spec.res  # 1280x704, the model's own 720p
    if text in RES:
        return RES[text]
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def latent_shape(spec: Spec, res: Tuple[int, int], frames: int) -> Tuple[int, ...]:
    h, w = res
    return (1, spec.channels, (frames - 1) // 4 + 1, h // spec.spatial, w // spec.spatial)


# ---------------------------------------------------------------------------------------------- ComfyUI
def import_comfy(cpu: bool):
    """Import ComfyUI from COMFYUI_PATH (like tests/integration): stubs for torchvision / av when missing."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        raise SystemExit("COMFYUI_PATH is not set: point it at a ComfyUI checkout (tested at 0.3.64)")
    if not (pathlib.Path(path) / "comfy" / "sd.py").is_file():
        raise SystemExit(f"COMFYUI_PATH={path} does not look like a ComfyUI checkout (no comfy/sd.py)")
    if path not in sys.path:
        sys.path.insert(0, path)
    import importlib.util

    stubs = os.environ.get("VORTA_COMFYUI_STUBS") or str(pathlib.Path(path).resolve().parent / "comfyui_stubs")
    if importlib.util.find_spec("torchvision") is None and pathlib.Path(stubs, "torchvision").is_dir():
        sys.path.insert(0, stubs)
    from comfy.cli_args import args

    args.cpu = cpu
    # keep the model where it was built: the benchmark builds it on the GPU and never offloads it
    args.highvram = not cpu
    import comfy.model_management  # noqa: F401
    import comfy.sd  # noqa: F401
    import comfy.samplers  # noqa: F401


def fill_random_(module: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """In place: N(0, scale) for weights and biases, 1 for normalisation scales. Fast on the GPU."""
    gen_dev = next(module.parameters()).device
    g = torch.Generator(device=gen_dev).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith(("weight", "scale")):
                p.fill_(1.0)
            else:
                p.normal_(0.0, scale, generator=g)


def build_model(spec: Spec, dtype: torch.dtype):
    """A ModelPatcher around the diffusion model at ``spec.unet``, built the way comfy.sd loads a diffusion model."""
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher

    unet_config = dict(spec.unet)
    if unet_config.get("image_model") == "hunyuan_video":  # ComfyUI >= 0.3.70 requires the HunyuanVideo 1.5 fields
        import dataclasses

        from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

        fields = {f.name for f in dataclasses.fields(HunyuanVideoParams)}
        new = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
        unet_config.update({k: v for k, v in new.items() if k in fields})
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if model_config is None:
        raise RuntimeError(f"ComfyUI found no model class for {unet_config}")
    load_device = mm.get_torch_device()
    manual_cast = mm.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({}, "", device=load_device)
    fill_random_(model.diffusion_model)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())
    return patcher, type(model_config).__name__


def conditioning(spec: Spec, device="cpu"):
    g = torch.Generator().manual_seed(0)

    def one():
        c = torch.randn(1, spec.text, 4096, generator=g)
        extra = {}
        if spec.family == "hunyuan":
            extra = {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 6.0}
        return [[c, extra]]

    return one(), one()


# ----------------------------------------------------------------------------------------------- timing
class Timer:
    """CUDA events (or wall clock on the CPU) per category; nothing synchronises until ``collect``."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.enabled = False
        self.events: List[tuple] = []
        self.inside = 0  # > 0 while VORTA's attention runs (its full-head calls reach the dense override)
        self.batches: List[int] = []
        self.branch_impl = "-"

    def now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def add(self, cat: str, start) -> None:
        if self.enabled:
            self.events.append((cat, start, self.now()))

    def elapsed_ms(self, a, b) -> float:
        return float(a.elapsed_time(b)) if self.cuda else (b - a) * 1000.0

    def collect(self) -> Dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out: Dict[str, float] = {}
        for cat, a, b in self.events:
            out[cat] = out.get(cat, 0.0) + self.elapsed_ms(a, b)
        self.events.clear()
        return out


def _lengths(args, kwargs):
    q, k = args[0], args[1]
    if kwargs.get("skip_reshape"):
        return q.shape[2], k.shape[2], q.shape[0]
    return q.shape[1], k.shape[1], q.shape[0]


def _kind(lq, lk, seq_len) -> str:
    if lq != lk:
        return "cross"
    return "self" if lq == seq_len else "other"


def instrument(patcher, timer: Timer, seq_len: int):
    """A clone whose attention calls are timed: ComfyUI's override slot (dense path, and VORTA's full heads and
    non-routed calls, which VORTA chains to), plus an APPLY_MODEL wrapper recording the batch of each call."""
    import comfy.patcher_extension as pe

    m = patcher.clone()

    def override(func, *args, **kwargs):
        if not timer.enabled:
            return func(*args, **kwargs)
        lq, lk, _ = _lengths(args, kwargs)
        cat = "self/full" if timer.inside else _kind(lq, lk, seq_len)
        s = timer.now()
        out = func(*args, **kwargs)
        timer.add(cat, s)
        return out

    def apply_model(executor, x, *args, **kwargs):
        timer.batches.append(int(x.shape[0]))
        return executor(x, *args, **kwargs)

    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "vorta_bench", apply_model)
    return m


def instrument_vorta(patched, timer: Timer, seq_len: int, device) -> None:
    """Time VORTA's attention entry point and its coreset / sliding branches (the full branch reaches the override)."""
    from comfyui_vorta.vorta.kernels import select_branches
    from comfyui_vorta.vorta.comfy.install import find_patch

    holder = find_patch(patched)
    orig = holder.attention

    def attention(func, *args, **kwargs):
        if not timer.enabled:
            return orig(func, *args, **kwargs)
        lq, lk, _ = _lengths(args, kwargs)
        s = timer.now()
        timer.inside += 1
        try:
            out = orig(func, *args, **kwargs)
        finally:
            timer.inside -= 1
        timer.add(_kind(lq, lk, seq_len), s)
        return out

    attention._vorta_override = True
    holder.attention = attention

    def timed(cat, fn):
        def branch(*a, **kw):
            s = timer.now()
            fn(*a, **kw)
            timer.add(cat, s)

        return branch

    base = select_branches(holder.settings.backend, device)
    timer.branch_impl = base.name
    key = str(torch.empty(0, device=device).device)  # the patch keys by q.device: 'cuda:0', not 'cuda'
    holder._branches[key] = dataclasses.replace(base, coreset=timed("self/coreset", base.coreset),
                                                        sliding=timed("self/sliding", base.sliding))
    return holder


@dataclass
class StepTimes:
    totals: List[float] = field(default_factory=list)  # ms per timed step
    cats: List[Dict[str, float]] = field(default_factory=list)
    warmup: List[float] = field(default_factory=list)
    clean: List[float] = field(default_factory=list)  # uninstrumented steps

    @property
    def median(self) -> float:
        return statistics.median(self.totals)

    def attention_ms(self, which=("self", "cross", "other")) -> float:
        return statistics.median([sum(c.get(k, 0.0) for k in which) for c in self.cats])

    def share(self, which=("self", "cross", "other")) -> float:
        return statistics.median([sum(c.get(k, 0.0) for k in which) / t for c, t in zip(self.cats, self.totals)])

    def breakdown(self) -> Dict[str, float]:
        """Median-step breakdown in ms (the timed step closest to the median)."""
        i = min(range(len(self.totals)), key=lambda j: abs(self.totals[j] - self.median))
        c, t = self.cats[i], self.totals[i]
        branches = sum(c.get(k, 0.0) for k in ("self/sliding", "self/coreset", "self/full"))
        out = {
            "self-attention: sliding tile": c.get("self/sliding", 0.0),
            "self-attention: coreset": c.get("self/coreset", 0.0),
            "self-attention: full heads": c.get("self/full", 0.0),
            "self-attention: routing glue (split, assemble)": max(0.0, c.get("self", 0.0) - branches) if branches else 0.0,
            "self-attention (dense)": c.get("self", 0.0) if not branches else 0.0,
            "cross-attention": c.get("cross", 0.0),
            "other attention (text refiner)": c.get("other", 0.0),
        }
        out["rest of the model (linear, norms, rope, modulation, CFG)"] = t - sum(
            c.get(k, 0.0) for k in ("self", "cross", "other"))
        out["step"] = t
        return out


# --------------------------------------------------------------------------------------------- the bench
@dataclass
class Row:
    name: str
    heads: List[float]  # shares full, coreset, sliding
    times: Optional[StepTimes]
    peak: float = float("nan")  # bytes
    median: float = float("nan")
    share: float = float("nan")
    self_share: float = float("nan")
    note: str = ""
    batches: str = ""


class Bench:
    def __init__(self, spec: Spec, args, cuda: bool, deadline: float):
        self.spec, self.args, self.cuda, self.deadline = spec, args, cuda, deadline
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = torch.bfloat16 if cuda else torch.float32
        self.res = parse_res(args.res if not args.tiny else None, spec)
        self.frames = args.frames if (args.frames and not args.tiny) else spec.frames
        self.shape = latent_shape(spec, self.res, self.frames)
        self.grid = grid_from_latent(self.shape[2:], (1, 2, 2))
        self.text_len = spec.text if spec.family == "hunyuan" else 0
        self.seq_len = self.grid.numel + self.text_len
        self.timer = Timer(cuda)
        self.rows: List[Row] = []
        self.notes: List[str] = []
        self.breakdowns: Dict[str, Dict[str, float]] = {}
        self.allowed: Dict[int, List[int]] = {}
        self.branch_impl = "-"

    # ..................................................................................... set-up
    def setup(self):
        import comfy.samplers

        t0 = time.perf_counter()
        self.base, self.config_class = build_model(self.spec, self.dtype)
        if self.cuda:
            torch.cuda.synchronize()
        self.build_s = time.perf_counter() - t0
        self.weights = torch.cuda.memory_allocated() if self.cuda else sum(
            p.numel() * p.element_size() for p in self.base.model.parameters())
        dm = self.base.model.diffusion_model
        from comfyui_vorta.vorta.comfy.adapters import detect

        self.adapter = detect(dm)
        self.positive, self.negative = conditioning(self.spec)
        ms = self.base.get_model_object("model_sampling")
        self.sigmas = comfy.samplers.calculate_sigmas(ms, "simple", SCHEDULE_STEPS).cpu()
        self.mid = SCHEDULE_STEPS // 2
        if self.args.tiny:
            self.node_inputs = dict(preset="custom", **TINY_CFG)
            self.config = VortaConfig(tile=(1, 2, 2), bucket=(1, 2, 2))
        else:
            self.node_inputs = dict(preset="auto")
            self.config = preset_for(self.spec.family, self.grid.shape, self.adapter.dim).config

    def patch(self, mode: str, bundle=None):
        """Apply VORTA exactly as a workflow does: the node's execute with the node's defaults."""
        inputs = dict(mode=mode, **self.node_inputs)
        if not self.args.no_node:
            from comfyui_vorta.nodes.apply import VortaApply
            from comfyui_vorta.vorta.comfy.setting_specs import APPLY

            apply_names = {s.name for s in APPLY}
            settings = {k: v for k, v in inputs.items() if k not in apply_names}
            defaults = {i.id: i.default for i in VortaApply.define_schema().inputs
                        if getattr(i, "default", None) is not None}
            own = {k: v for k, v in inputs.items() if k in apply_names}
            return VortaApply.execute(model=self.instrumented, router=bundle, settings=settings,
                                      **{**defaults, **own}).result[0]
        from comfyui_vorta.vorta.comfy.options import build_settings
        from comfyui_vorta.vorta.comfy.install import apply_vorta

        return apply_vorta(self.instrumented, build_settings(**inputs), bundle)

    def mix_bundle(self):
        """A router file whose decisions are constant: exactly 50 % sliding / 48 % coreset / 2 % full over all
        (layer, head) pairs, shuffled with a fixed seed."""
        from comfyui_vorta.vorta.comfy.plan import RouterBundle

        a = self.adapter
        n = a.num_layers * a.heads
        n_full = max(1, round(MIX["full"] * n))
        n_core = max(1, round(MIX["coreset"] * n))
        n_slide = n - n_full - n_core
        dec = torch.tensor([FULL] * n_full + [CORESET] * n_core + [SLIDING] * n_slide)
        dec = dec[torch.randperm(n, generator=torch.Generator().manual_seed(0))].view(a.num_layers, a.heads)
        bias = torch.nn.functional.one_hot(dec, 3).float().mul(16.0).view(a.num_layers, a.heads * 3)
        weight = torch.zeros(a.num_layers, a.heads * 3, a.dim)
        names = (official_layer_names("wan", a.num_layers) if a.family == "wan"
                 else official_layer_names("hunyuan", double=a.double, single=a.single))
        r = RouterSet(a.family, names, weight.to(torch.bfloat16), bias.to(torch.bfloat16),
                      {"model": "benchmark: fixed 50/48/2 mix"})
        return RouterBundle(r, self.config, "fixed-mix"), dec

    # ..................................................................................... one run
    def sample(self, model, plan: List[Tuple[int, int, int, int]], clean_steps: int = 0) -> Dict[int, StepTimes]:
        """Run ComfyUI's sampler once; ``plan`` = [(sigma index, warm-up steps, min timed, max timed)]. Warm-up
        and timed steps walk through consecutive sigmas from the index (wrapping inside the schedule) so that the
        once-per-timestep routing work runs in every step, as in a real run; ``allowed`` limits them to the steps
        with the same decisions."""
        import comfy.samplers

        timer, budget = self.timer, self.spec.budget_s
        results: Dict[int, StepTimes] = {}

        def step(model_k, x, sigma, extra_args):
            s = timer.now()
            model_k(x, sigma, **extra_args)
            e = timer.now()
            if self.cuda:
                torch.cuda.synchronize()
            return timer.elapsed_ms(s, e)

        def sampler_fn(model_k, noise, sigmas, extra_args=None, callback=None, disable=None):
            extra_args = extra_args or {}
            x = noise
            s_in = x.new_ones([x.shape[0]])
            for idx, warm, lo, hi in plan:
                st = results.setdefault(idx, StepTimes())
                steps = list(self.allowed.get(idx, range(len(sigmas) - 1)))
                start = steps.index(idx)
                n = [0]

                def sig():
                    i = steps[(start + n[0]) % len(steps)]
                    n[0] += 1
                    return sigmas[i] * s_in

                timer.enabled = False
                for _ in range(warm):
                    st.warmup.append(step(model_k, x, sig(), extra_args))
                for _ in range(clean_steps):
                    st.clean.append(step(model_k, x, sig(), extra_args))
                t0 = time.perf_counter()
                timer.enabled = True
                while len(st.totals) < hi and (len(st.totals) < lo or (
                        time.perf_counter() - t0 < budget and
                        time.perf_counter() + st.totals[-1] / 1000.0 < self.deadline)):
                    timer.batches.clear()
                    timer.events.clear()
                    st.totals.append(step(model_k, x, sig(), extra_args))
                    st.cats.append(timer.collect())
                timer.enabled = False
            return x

        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(self.positive, self.negative)
        guider.set_cfg(self.spec.cfg)
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(0))
        latent = torch.zeros(self.shape)
        with torch.inference_mode():
            guider.sample(noise, latent, comfy.samplers.KSAMPLER(sampler_fn), self.sigmas, disable_pbar=True, seed=0)
        return results

    def prior_ms(self) -> float:
        """A rough dense step before anything was timed: attention at 350 TFLOP/s, the rest at 500 (batch 2)."""
        if not self.cuda:
            return 0.0
        d = self.adapter.heads * 128
        attn = 4.0 * self.seq_len ** 2 * d * self.adapter.num_layers * 2
        lin = 2.0 * sum(p.numel() for p in self.base.model.parameters()) * self.seq_len * 2
        return (attn / 350e12 + lin / 500e12) * 1000.0

    def estimate_ms(self, dense_like: bool) -> float:
        ref = [r for r in self.rows if r.times is not None and (r.name in ("dense", "vorta full")) == dense_like]
        if not ref and not dense_like:
            ref = [r for r in self.rows if r.times is not None]
            return 0.5 * max(r.median for r in ref) if ref else 0.5 * self.prior_ms()
        if ref:
            return max(r.median for r in ref)
        # nothing timed yet of this kind: the dense estimate, halved for sparse configurations
        return self.prior_ms() * (1.0 if dense_like else 0.5)

    def fits(self, name: str, steps: int, dense_like: bool) -> bool:
        need = steps * self.estimate_ms(dense_like) / 1000.0
        if time.perf_counter() + need > self.deadline:
            self.notes.append(f"`{name}` skipped: about {need:.0f} s of steps would pass the time limit")
            print(f"  skip {name}: about {need:.0f} s would pass the deadline", flush=True)
            return False
        return True

    def run_config(self, name: str, model, heads: List[float], idx: int, dense_like: bool, clean: int = 0,
                   holder=None) -> Optional[Row]:
        warm = 1 if (not dense_like or self.spec.full_warmup) else 0
        lo, hi = (self.args.repeats, self.args.repeats) if self.args.tiny else (1, self.args.max_repeats)
        if not self.fits(name, warm + lo + clean, dense_like):
            return None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        st = self.sample(model, [(idx, warm, lo, hi)], clean_steps=clean)[idx]
        row = Row(name, heads, st, median=st.median, share=st.share(), self_share=st.share(("self",)),
                  batches="+".join(map(str, self.timer.batches)))
        row.peak = torch.cuda.max_memory_allocated() if self.cuda else float("nan")
        if holder is not None:
            fb = holder.stats.fallbacks
            if fb:
                row.note = "dense fallbacks: " + "; ".join(f"{k} (x{v})" for k, v in fb.items())
            print(f"  {holder.last_summary}", flush=True)
        print(f"  {name}: steps ms {', '.join(f'{t:.0f}' for t in st.totals)} (warm-up "
              f"{', '.join(f'{t:.0f}' for t in st.warmup) or '-'}{'; uninstrumented ' + ', '.join(f'{t:.0f}' for t in st.clean) if st.clean else ''}); "
              f"attention {100 * row.share:.0f}%, batch per model call {row.batches}, peak "
              f"{row.peak / 2**30:.2f} GiB, {time.perf_counter() - t0:.0f} s", flush=True)
        self.rows.append(row)
        if self.args.profile and self.cuda:
            self.profile(model, idx, name)
        return row

    def profile(self, model, idx: int, name: str) -> None:
        """One more step under torch.profiler: the CUDA kernels it ran, by total time (``--profile``)."""
        from profile_routed import kernel_table

        table = kernel_table(lambda: self.sample(model, [(idx, 0, 1, 1)]), rows=12, warm=False)
        print(f"  profile of one `{name}` step:\n{table}", flush=True)

    def run(self) -> None:
        from comfyui_vorta.vorta.comfy.preview import preview_table

        self.setup()
        a = self.adapter
        print(f"== {self.spec.title}: {self.config_class}, {a.num_layers} layers x {a.heads} heads, latent "
              f"{tuple(self.shape)} -> grid {self.grid.shape} ({self.grid.numel} tokens + {self.text_len} text), "
              f"weights {self.weights / 2**30:.1f} GiB built in {self.build_s:.1f} s", flush=True)
        self.instrumented = instrument(self.base, self.timer, self.seq_len)
        if self.cuda and not self.spec.full_warmup:
            self.small_warmup()
        only = set(self.args.configs.split(",")) if self.args.configs else None

        def want(n):
            return only is None or n in only

        if want("dense"):
            self.run_config("dense", self.instrumented, [1.0, 0.0, 0.0], self.mid, True)
        forced: Dict[int, Row] = {}
        if want("mix"):
            bundle, dec = self.mix_bundle()
            m = self.patch("router", bundle)
            holder = instrument_vorta(m, self.timer, self.seq_len, self.device)
            shares = torch.bincount(dec.flatten(), minlength=3).double() / dec.numel()
            row = self.run_config("mix 50/48/2", m, shares.tolist(), self.mid, False, clean=int(self.spec.clean_step),
                                  holder=holder)
            if row is not None:
                self.breakdowns["mix 50/48/2"] = row.times.breakdown()
            del m, holder
        for mode, b in (("sliding", SLIDING), ("coreset", CORESET), ("schedule", None), ("full", FULL)):
            if not want(mode):
                continue
            if mode == "schedule":
                self.run_schedule(forced, preview_table)
                continue
            m = self.patch(mode)
            holder = instrument_vorta(m, self.timer, self.seq_len, self.device)
            heads = [0.0, 0.0, 0.0]
            heads[b] = 1.0
            row = self.run_config(f"vorta {mode}", m, heads, self.mid, mode == "full", holder=holder)
            if row is not None:
                forced[b] = row
            del m, holder
        dense = next((r for r in self.rows if r.name == "dense"), None)
        if dense is not None and dense.times is not None:
            self.breakdowns = {"dense": dense.times.breakdown(), **self.breakdowns}

    def small_warmup(self) -> None:
        """One dense step at a reduced latent (CUDA context, cuBLAS, allocator) before the first timed step."""
        full_shape = self.shape
        half = lambda n: max(2, n // 4 * 2)  # noqa: E731  (even: the 2x2 patch embedding needs it)
        self.shape = full_shape[:2] + (min(full_shape[2], 5), half(full_shape[3]), half(full_shape[4]))
        small = self.shape
        t0 = time.perf_counter()
        try:
            self.sample(self.base, [(self.mid, 1, 0, 0)])
        finally:
            self.shape = full_shape
        print(f"  warm-up at latent {small}: "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

    def run_schedule(self, forced: Dict[int, Row], preview_table) -> None:
        m = self.patch("schedule")
        table, _ = preview_table(m, self.sigmas)  # (steps, layers, heads), the node's own rule
        groups: Dict[bytes, List[int]] = {}
        for i in range(table.shape[0]):
            groups.setdefault(table[i].numpy().tobytes(), []).append(i)
        shares = (torch.bincount(table.flatten(), minlength=3).double() / table.numel()).tolist()
        parts, notes, peaks = [], [], []
        holder = instrument_vorta(m, self.timer, self.seq_len, self.device)
        for steps in groups.values():
            t = table[steps[0]]
            uniform = int(t.flatten()[0]) if bool((t == t.flatten()[0]).all()) else None
            what = BRANCHES[uniform] if uniform is not None else "mixed"
            if uniform is not None and uniform in forced:
                r = forced[uniform]
                parts.append((len(steps), r.median, r.times.attention_ms(), r.times.attention_ms(("self",))))
                peaks.append(r.peak)
                notes.append(f"{len(steps)} steps all-{what} (time of `vorta {what}` reused: same decisions)")
                continue
            idx = steps[len(steps) // 2]
            self.allowed[idx] = steps
            if not self.fits(f"schedule state {what}", 2, uniform == FULL):
                return
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            st = self.sample(m, [(idx, 1, 1, self.args.max_repeats)])[idx]
            self.allowed.pop(idx, None)
            peaks.append(torch.cuda.max_memory_allocated() if self.cuda else float("nan"))
            parts.append((len(steps), st.median, st.attention_ms(), st.attention_ms(("self",))))
            notes.append(f"{len(steps)} steps {what} (timed at step {idx}: {st.median:.0f} ms)")
        n = sum(p[0] for p in parts)
        med = sum(p[0] * p[1] for p in parts) / n
        row = Row("schedule (50 steps)", shares, None, peak=max(peaks), median=med,
                  share=sum(p[0] * p[2] for p in parts) / n / med, self_share=sum(p[0] * p[3] for p in parts) / n / med,
                  note="; ".join(notes))
        print(f"  schedule: {row.note}; weighted step {med:.0f} ms", flush=True)
        self.rows.append(row)

    def close(self) -> None:
        import comfy.model_management as mm

        self.base = self.instrumented = self.adapter = None
        mm.unload_all_models()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            left = torch.cuda.memory_allocated()
            if left > 2**30:
                print(f"  warning: {left / 2**30:.1f} GiB still allocated after freeing {self.spec.name}", flush=True)

    # ..................................................................................... report
    def table(self) -> str:
        s = self.spec
        dense = next((r for r in self.rows if r.name == "dense"), None)
        title = (f"### {s.title} {self.res[1]}x{self.res[0]}, {self.frames} frames: latent {tuple(self.shape[1:])}, "
                 f"grid {'x'.join(map(str, self.grid.shape))} = {self.grid.numel} video tokens"
                 f"{f' + {self.text_len} text' if self.text_len else ''}, "
                 f"sparse settings tile {'x'.join(map(str, self.config.tile))} window "
                 f"{'x'.join(map(str, self.config.window))} bucket {'x'.join(map(str, self.config.bucket))} "
                 f"ratio {self.config.ratio}, CFG {self.spec.cfg}, sparse kernels: {self.timer.branch_impl}")
        lines = [title, "",
                 "| configuration | heads full / coreset / sliding | step (median) | steps timed | speed-up vs dense | "
                 "attention share (self-attn) | peak memory | peak vs dense | batch per model call |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            sp = f"{dense.median / r.median:.2f}x" if dense is not None else "-"
            pk = f"{r.peak / 2**30:.2f} GiB" if r.peak == r.peak else "-"
            pv = f"{100 * (r.peak / dense.peak - 1):+.1f}%" if (dense is not None and r.peak == r.peak) else "-"
            n = (f"{len(r.times.totals)} ({min(r.times.totals) / 1000:.2f}-{max(r.times.totals) / 1000:.2f} s)"
                 if r.times is not None else "weighted")
            lines.append(f"| {r.name} | {' / '.join(f'{100 * h:.0f}%' for h in r.heads)} | {r.median / 1000:.3f} s | "
                         f"{n} | {sp} | {100 * r.share:.0f}% ({100 * r.self_share:.0f}%) | {pk} | {pv} | "
                         f"{r.batches or '-'} |")
        for r in self.rows:
            if r.note:
                lines.append(f"\n* `{r.name}`: {r.note}")
        if self.cuda and self.timer.branch_impl == "torch":
            lines.append("\n* **WARNING: the sparse branches ran on the PyTorch reference, not the Triton kernels**")
        for n in self.notes:
            lines.append(f"\n* {n}")
        mix = next((r for r in self.rows if r.name.startswith("mix") and r.times is not None), None)
        if mix is not None and mix.times.clean:
            lines.append(f"\n* `mix` without the timing events: {', '.join(f'{t / 1000:.3f} s' for t in mix.times.clean)} "
                         f"per step (instrumented median {mix.median / 1000:.3f} s)")
        if self.breakdowns:
            names = list(self.breakdowns)
            lines += ["", f"Breakdown of one step (the timed step nearest the median), ms:", "",
                      "| component | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            keys = list(next(iter(self.breakdowns.values())))
            for k in keys:
                cells = []
                for nme in names:
                    b = self.breakdowns[nme]
                    cells.append(f"{b[k]:.0f} ({100 * b[k] / b['step']:.0f}%)" if k != "step" else f"{b[k]:.0f}")
                if k == "step" or any(self.breakdowns[nme][k] > 0 for nme in names):
                    lines.append(f"| {k} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def header(args, cuda: bool) -> str:
    import comfy.ldm.modules.attention as attn

    try:
        import comfyui_version

        cv = comfyui_version.__version__
    except Exception:  # pragma: no cover
        cv = "?"
    dev = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})"
    tri = ""
    if cuda:
        try:
            import triton

            tri = f" | triton {triton.__version__}"
        except Exception:  # pragma: no cover
            tri = " | triton missing"
    return (f"{datetime.date.today()} | {dev} | torch {torch.__version__}{tri} | ComfyUI {cv} | python "
            f"{platform.python_version()} | {'bf16' if cuda else 'fp32 (tiny CPU smoke run)'} | dense attention: "
            f"ComfyUI `{attn.optimized_attention.__name__}` | random weights, real architectures | step = one "
            f"sampler call (cond + uncond in one call when ComfyUI batches them; CFG scale per table)")


METHOD = """Method: `python bench/e2e.py` (see its docstring). Each configuration runs through
ComfyUI's `CFGGuider.sample`; a step is one call of the sampler's model (cond + uncond, batched by ComfyUI when its
memory rule allows; the batch used is listed). Sparse configurations get one untimed warm-up step (Triton compile);
dense ones on the large models only a reduced-size warm-up step first (CUDA context, cuBLAS), to save device time;
timed steps repeat until the configuration's time budget is spent. Attention time = CUDA events around every
attention call (ComfyUI's override slot, VORTA's entry point and branches), no synchronisation inside a step.
`mix 50/48/2` = a fixed, seeded random assignment per (layer, head), delivered through router mode with a constant
router. `schedule` = the node's training-free mode over a 50-step `simple` schedule, step times weighted by the
number of steps with each decision table. Peak memory includes the weights."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/e2e.py")
    ap.add_argument("--model", default="wan14b",
                    help=f"comma-separated, run in order: {', '.join(MODELS)} (with --tiny: {', '.join(TINY)})")
    ap.add_argument("--res", help="480p, 720p or HxW (default: the model's own)")
    ap.add_argument("--frames", type=int, help="video frames (default: the model's own)")
    ap.add_argument("--steps", type=int, dest="max_repeats", default=5, help="most timed steps per configuration")
    ap.add_argument("--repeats", type=int, default=2, help="timed steps per configuration with --tiny")
    ap.add_argument("--configs", help="subset: dense,mix,sliding,coreset,full,schedule")
    ap.add_argument("--budget", type=float, help="seconds of timed steps per configuration (default per model)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="seconds for the whole run; configurations that would pass it are skipped (0: none)")
    ap.add_argument("--cfg", type=float, help="CFG scale (default 5.0; 1.0 skips the uncond pass, as HunyuanVideo "
                                               "workflows with embedded guidance do)")
    ap.add_argument("--tiny", action="store_true", help="tiny dimensions on the CPU (smoke test)")
    ap.add_argument("--no-node", action="store_true", help="patch with build_settings + apply_vorta, not the node")
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernels of one extra step per configuration")
    ap.add_argument("--md", help="write the tables with a header to this markdown file (rewritten after each model)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.time_limit if args.time_limit > 0 else float("inf")
    cuda = not args.tiny
    if cuda and not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --tiny for the CPU smoke run)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import_comfy(cpu=not cuda)
    registry = TINY if args.tiny else MODELS
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    bad = [n for n in names if n not in registry]
    if bad:
        print(f"unknown model(s) {bad}; expected {list(registry)}", file=sys.stderr)
        return 2
    head = header(args, cuda)
    print(head, flush=True)
    tables: List[str] = []

    def write():
        if args.md:
            with open(args.md, "w") as f:
                f.write(head + "\n\n" + METHOD + "\n\n" + "\n\n".join(tables) + "\n")

    for name in names:
        if time.perf_counter() > deadline:
            tables.append(f"### {registry[name].title}: skipped (time limit)")
            write()
            continue
        spec = registry[name]
        if args.budget is not None:
            spec = dataclasses.replace(spec, budget_s=args.budget)
        if args.cfg is not None:
            spec = dataclasses.replace(spec, cfg=args.cfg)
        b = Bench(spec, args, cuda, deadline)
        try:
            b.run()
        except Exception as e:  # report and go on with the next model
            import traceback

            traceback.print_exc()
            b.notes.append(f"stopped by {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}")
        finally:
            tables.append(b.table())
            b.close()
            write()
        print(f"  [{time.perf_counter() - start:.0f} s so far]", flush=True)
    print("\n" + head + "\n\n" + "\n\n".join(tables), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
