"""Apply VORTA with ComfyUI's own EasyCache and context windows (the core nodes from this tree's ``comfy_extras``).

Context windows run the model on frame windows of the latent, so each model call has its own (smaller) token grid:
every routed call must use the grid of *that* call, and the sampled latent must equal an independent oracle run on
ComfyUI's per-call q/k/v.  EasyCache skips model calls and reuses cached outputs: VORTA must not change which steps
are skipped (forced full = EasyCache alone) and its run summary must count only the model calls that ran."""
from __future__ import annotations

import importlib
import inspect
import math
from typing import List, Tuple

import pytest
import torch

from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names

from oracle import Oracle, Positions, install_oracle

CFG = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(2, 2, 2), ratio=0.5)
CUSTOM = dict(preset="custom", tile_t=1, tile_h=2, tile_w=2, window_t=3, window_h=3, window_w=3, bucket_t=2,
              bucket_h=2, bucket_w=2, ratio=0.5, backend="torch")
LATENT = (1, 16, 7, 12, 14)  # 7 latent frames, grid 7 x 6 x 7 (partial tiles and buckets)
# Wan Context Windows counts real frames: 13 -> 4 latent frames, overlap 8 -> 2; standard_static over 7 frames gives
# the windows 0-3, 2-5, 3-6 (0.33.0's causal_window_fix prepends the frame before a window: 5 frames in the later
# windows; 0.3.64 has no such fix, every window has 4).
WINDOWS = dict(context_length=13, context_overlap=8, context_schedule="standard_static", context_stride=1,
               closed_loop=False, fuse_method="pyramid", freenoise=False, retain_first_frame=False,
               split_conds_to_windows=False)
WAN_LAYERS = 2


def _core_node(module: str, name: str) -> type:
    """A core node class from this tree's comfy_extras; skip where the tree predates it."""
    try:
        mod = importlib.import_module(f"comfy_extras.{module}")
    except ImportError as e:
        pytest.skip(f"this ComfyUI has no comfy_extras.{module} ({e})")
    if not hasattr(mod, name):
        pytest.skip(f"this ComfyUI's comfy_extras.{module} has no {name}")
    return getattr(mod, name)


def _run_node(node: type, model, **inputs):
    """The node's MODEL output, passing only the inputs this tree's version of the node declares."""
    params = inspect.signature(node.execute).parameters
    return node.execute(model, **{k: v for k, v in inputs.items() if k in params}).result[0]


def _context_windows(model):
    """Wan Context Windows (the node users put before the sampler) with ``WINDOWS``."""
    return _run_node(_core_node("nodes_context_windows", "WanContextWindowsManualNode"), model, **WINDOWS)


def _easycache(model):
    """EasyCache with a threshold high enough that the tiny model skips steps."""
    node = _core_node("nodes_easycache", "EasyCacheNode")
    return _run_node(node, model, reuse_threshold=1.5, start_percent=0.1, end_percent=0.95, verbose=False)


def _model_calls(model) -> Tuple[object, List[Tuple[float, tuple]]]:
    """A clone whose innermost DIFFUSION_MODEL wrapper records (sigma, x shape) of every model call that runs."""
    import comfy.patcher_extension as pe

    m = model.clone()
    calls = []

    def record(executor, *args, **kwargs):
        opts = args[-1] if isinstance(args[-1], dict) else kwargs["transformer_options"]
        calls.append((float(opts["sigmas"].reshape(-1)[0]), tuple(args[0].shape)))
        return executor(*args, **kwargs)

    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_record_model_calls", record)
    return m, calls


def _wan_grid(x_shape: tuple) -> tuple:
    """The token grid of a Wan model call from its latent x (patch 1 x 2 x 2, padded up)."""
    return (x_shape[2], math.ceil(x_shape[3] / 2), math.ceil(x_shape[4] / 2))


def _bundle(P, family: str = "wan") -> object:
    """Random routers for the tiny models (Wan: 2 blocks; HunyuanVideo: 2 double + 2 single blocks)."""
    names = (official_layer_names("wan", WAN_LAYERS) if family == "wan"
             else official_layer_names("hunyuan", double=2, single=2))
    return P.RouterBundle(make_random_routers(family, names, 256, 2, seed=11), CFG, "random")


# ------------------------------------------------------------------------------------------- context windows
def test_context_windows_route_each_window_on_its_own_grid_and_match_the_oracle(harness, vorta_comfy):
    """Each window is a model call with fewer frames than the latent: the routed grid must follow the call."""
    P = vorta_comfy
    m = harness.load("wan_t2v")
    pos, neg = harness.wan_cond(1), harness.wan_cond(2)
    patched = _context_windows(P.apply_vorta(m, build_settings(mode="router", **CUSTOM), _bundle(P)))
    patched, model_calls = _model_calls(patched)
    holder = P.find_patch(patched)
    routed = []
    orig = holder.attention

    def attention(func, *args, **kwargs):
        opts = kwargs["transformer_options"]
        state = opts[P.STATE]
        routed.append(dict(grid=state.problem.grid.shape, layout=state.layout.grid.shape, tokens=args[0].shape[1],
                           x=model_calls[-1][1], reported=opts.get("grid_sizes")))
        return orig(func, *args, **kwargs)

    holder.attention = attention
    got = harness.sample(patched, LATENT, pos, neg, steps=3)
    assert holder.stats.routed_calls == len(routed) > 0 and not holder.stats.fallbacks, holder.last_summary

    frames = {x[2] for _, x in model_calls}
    assert LATENT[2] not in frames and len(model_calls) >= 2 * 3, (frames, len(model_calls))  # >= 2 windows a step
    for r in routed:
        assert r["grid"] == r["layout"] == _wan_grid(r["x"]), r
        assert r["tokens"] == math.prod(r["grid"]), r
        if r["reported"] is not None:  # ComfyUI >= 0.3.71 reports the grid of the call it runs
            assert tuple(int(g) for g in r["reported"]) == r["grid"], r
    assert len(routed) == WAN_LAYERS * len(model_calls)

    dm = m.get_model_object("diffusion_model")
    ms = m.get_model_object("model_sampling")

    def decisions(sigma, layer):
        return holder.plan.decisions_at(dm, sigma, float(ms.timestep(torch.tensor(sigma))), "cpu").decisions[layer]

    oracle = Oracle(decisions, CFG, "query", positions=None)

    def positions(opts, S):
        grid = _wan_grid(oracle.x_shape)
        return Positions.raster(grid) if S == math.prod(grid) else None

    oracle.positions = positions
    reference, remove = install_oracle(_context_windows(m), oracle)
    try:
        want = harness.sample(reference, LATENT, pos, neg, steps=3)
    finally:
        remove()
    assert oracle.checked == len(routed), (oracle.checked, len(routed))
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("order", ["vorta-then-windows", "windows-then-vorta"])
def test_context_windows_with_every_head_full_equal_plain_context_windows(harness, vorta_comfy, order):
    """Forced full through VORTA is ComfyUI's own attention, window by window, whichever node comes first."""
    P = vorta_comfy
    m = harness.load("wan_t2v")
    pos, neg = harness.wan_cond(1), harness.wan_cond(2)
    want = harness.sample(_context_windows(m), LATENT, pos, neg, steps=2)
    full = build_settings(mode="full", backend="torch")
    if order == "vorta-then-windows":
        patched = _context_windows(P.apply_vorta(m, full))
    else:
        patched = P.apply_vorta(_context_windows(m), full)
    got = harness.sample(patched, LATENT, pos, neg, steps=2)
    st = P.find_patch(patched).stats
    assert st.routed_calls > 0 and not st.fallbacks
    assert torch.equal(got, want)


# ------------------------------------------------------------------------------------------------- EasyCache
EASY_LATENT = (1, 16, 3, 8, 10)
EASY_STEPS = 8  # one model call a step (Wan's cond and uncond share a batch; HunyuanVideo runs at cfg 1)


@pytest.mark.parametrize("order", ["vorta-then-easycache", "easycache-then-vorta"])
@pytest.mark.parametrize("family", ["wan", "hunyuan"])
def test_easycache_skips_the_same_steps_and_vorta_counts_only_calls_that_ran(harness, vorta_comfy, family, order):
    """Forced full must leave EasyCache's skip decisions (and so the latent) unchanged; sparse routing must complete;
    in either node order the summary counts only model calls that ran (VORTA's wrapper sits outside EasyCache's
    when Apply VORTA comes first, and then sees the skipped calls too)."""
    P = vorta_comfy
    if family == "wan":
        m, layers, cfg = harness.load("wan_t2v"), WAN_LAYERS, 3.0
        pos, neg = harness.wan_cond(1), harness.wan_cond(2)
    else:
        m, layers, cfg = harness.load("hunyuan"), 4, 1.0  # 2 double + 2 single blocks; guidance-distilled
        pos, neg = harness.hunyuan_cond(1), harness.hunyuan_cond(2)
    plain, plain_ran = _model_calls(_easycache(m))
    want = harness.sample(plain, EASY_LATENT, pos, neg, steps=EASY_STEPS, cfg=cfg)
    assert 0 < len(plain_ran) < EASY_STEPS, plain_ran  # EasyCache skipped steps: the check is not void
    for mode in ("full", "router"):
        settings = build_settings(mode=mode, **CUSTOM)
        bundle = _bundle(P, family) if mode == "router" else None
        if order == "vorta-then-easycache":
            patched = _easycache(P.apply_vorta(m, settings, bundle))
        else:
            patched = P.apply_vorta(_easycache(m), settings, bundle)
        patched, ran = _model_calls(patched)
        got = harness.sample(patched, EASY_LATENT, pos, neg, steps=EASY_STEPS, cfg=cfg)
        holder = P.find_patch(patched)
        st = holder.stats
        if mode == "full":
            assert ran == plain_ran and torch.equal(got, want), (ran, plain_ran)
        else:
            assert torch.isfinite(got).all() and sum(st.heads[1:]) > 0, holder.last_summary
        assert 0 < len(ran) < EASY_STEPS and not st.fallbacks, (mode, ran)
        assert st.routed_calls == layers * len(ran) and st.model_calls == len(ran), holder.last_summary
        seen_skipped = EASY_STEPS - len(ran) if order == "vorta-then-easycache" else 0  # only an outer wrapper sees them
        assert st.skipped_calls == seen_skipped, holder.last_summary
        assert f"in {len(ran)} model calls" in holder.last_summary, holder.last_summary
