"""The ComfyUI adapter: the only part of the pack that imports ``comfy.*`` (lazily, inside functions).

* ``install``   -- Apply VORTA: clone, object patches resolved on the running model, DIFFUSION_MODEL / OUTER_SAMPLE wrappers
* ``adapters``  -- Wan / HunyuanVideo: what to tag, time MLP, where the tokens of a model call are
* ``plan``      -- ``RoutingPlan``: decisions at a sigma, the problem for a token layout (public API)
* ``override``  -- the attention override and the chain it hands calls to
* ``settings``  -- what Apply VORTA chose, dense-block lists, percent window, training-free schedule (pure)
* ``stats``     -- per-run counters and the end-of-run summary line (pure)
* ``preview``, ``preview_node`` -- routing heat map and text summary; the preview table
* ``loading``   -- router files -> RouterBundle; ``folders`` -- the ``models/vorta`` folder
"""
