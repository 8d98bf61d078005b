"""The ComfyUI adapter: the only part of the pack that imports ``comfy.*`` (lazily, inside functions).

* ``install``   -- Apply VORTA: clone, object patches resolved on the running model, DIFFUSION_MODEL / OUTER_SAMPLE wrappers
* ``adapters``  -- Wan / HunyuanVideo: what to tag, time MLP, where the tokens of a model call are
* ``plan``      -- ``RoutingPlan``: decisions at a sigma, the problem for a token layout (public API)
* ``override``  -- the attention override and the chain it hands calls to
* ``setting_specs`` -- the one declaration of every node setting (name, default, range, tooltip)
* ``options``   -- node input values -> ``Settings``
* ``settings``  -- what Apply VORTA chose, mode 'auto', the geometry used, dense blocks, percent window, schedule (pure)
* ``stats``     -- per-run counters and the end-of-run summary line (pure)
* ``preview``   -- the routing preview's table and outputs; ``heatmap`` -- the table drawn as an image
* ``loading``   -- router files -> RouterBundle; ``folders`` -- the ``models/vorta`` folder
"""
