"""torch.compile (ComfyUI's own TorchCompileModel wrapper) over a VORTA-patched model: same output as eager,
and routing decisions that change with the timestep do not cause recompiles (the override runs eagerly)."""
from __future__ import annotations

import torch

from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names

WAN = (1, 16, 3, 8, 10)


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_torch_compile_matches_eager_without_recompiles_for_new_decisions(harness, vorta_comfy, monkeypatch):
    import comfy.model_management as mm
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    # ComfyUI's CPU attention (attention_sub_quad) picks its chunk sizes from the free memory it reads on every call,
    # and torch.compile guards on that number: a busy machine recompiles for reasons that have nothing to do with
    # routing. A fixed reading keeps the count about VORTA alone.
    free = mm.get_free_memory(torch.device("cpu"))

    def fixed_free_memory(dev=None, torch_free_too=False):
        return (free, free) if torch_free_too else free

    monkeypatch.setattr(mm, "get_free_memory", fixed_free_memory)

    P = vorta_comfy
    m = harness.load("wan_t2v")
    s = build_settings(mode="router", preset="custom", tile_t=1, tile_h=2, tile_w=2, bucket_t=1, bucket_h=2,
                       bucket_w=2, backend="torch")
    routers = make_random_routers("wan", official_layer_names("wan", 2), 256, 2, seed=3)
    trained = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(1, 2, 2), ratio=0.5)
    patched = P.apply_vorta(m, s, P.RouterBundle(routers, trained, "random-wan"))
    pos, neg = harness.wan_cond(1), harness.wan_cond(2)
    eager = harness.sample(patched, WAN, pos, neg, steps=3, cfg=3.0)

    compiled = patched.clone()
    set_torch_compile_wrapper(compiled, backend="eager")
    holder = P.find_patch(compiled)
    seen = []
    step = holder.plan.decisions_at

    def record(*a, **k):
        st = step(*a, **k)
        seen.append(tuple(st.decisions.flatten().tolist()))
        return st

    holder.plan.decisions_at = record
    torch._dynamo.reset()
    out = harness.sample(compiled, WAN, pos, neg, steps=3, cfg=3.0)
    assert torch.allclose(out, eager, atol=1e-4, rtol=1e-4)
    graphs, first = _compiled_graphs(), set(seen)
    assert graphs > 0, "torch.compile did not trace anything"
    # another scheduler with the same step count (same shapes) visits new timesteps and new decisions
    seen.clear()
    harness.sample(compiled, WAN, pos, neg, steps=3, cfg=3.0, scheduler="beta")
    assert set(seen) - first, "the second schedule produced no new routing decisions; the check would be void"
    assert _compiled_graphs() == graphs
    # every tagged site compiles into its own cache: a shared code object would recompile per layer and stop
    # compiling after torch._dynamo's recompile_limit (8) on real models with 30-60 layers
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    sites = [fn for fn in compiled.object_patches.values() if getattr(fn, "_vorta_path", None)]
    assert len({fn.__code__ for fn in sites}) == len(sites) == 2
    assert all(len(_debug_get_cache_entry_list(fn.__code__)) <= 1 for fn in sites)
