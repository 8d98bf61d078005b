"""The ComfyUI adapter: the only part of the pack that imports ``comfy.*`` (lazily, inside functions).

* ``settings``  -- what Apply VORTA chose, dense-block lists, percent window, training-free schedule (pure)
* ``adapters``  -- Wan / HunyuanVideo: what to tag, time MLP, token grid of a call
* ``patch``     -- clone + object patches + DIFFUSION_MODEL / OUTER_SAMPLE wrappers + chained override
* ``stats``     -- per-run counters and the end-of-run summary line (pure)
* ``preview``   -- routing heat map and text summary (pure)
* ``loading``   -- router files -> RouterBundle; ``folders`` -- the ``models/vorta`` folder
"""
