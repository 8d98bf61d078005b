"""Test session set-up: Triton kernels run through the interpreter when there is no CUDA GPU, and PyTorch's CPU ops
use one thread.

Why one thread: every tensor in the tests is tiny, so a second intra-op thread gains nothing, while on a 2-core
machine shared with other work its OpenMP threads spin-wait for a core: the unit suite took 185 s of CPU time with
torch's default two threads and 108 s with one, the official-schedule test in test_timestep.py 17 s against 4 s
(``VORTA_TEST_THREADS`` overrides)."""
import os

try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    torch.set_num_threads(int(os.environ.get("VORTA_TEST_THREADS", "1")))
    # the sliding kernel's launch-config autotuner (on a GPU) would launch configs the tests did not choose and
    # write ~/.cache: off unless a test turns it on (tests/test_autotune.py)
    os.environ.setdefault("VORTA_AUTOTUNE", "0")
    os.environ.setdefault("VORTA_AUTOTUNE_CACHE", "")
except ImportError:  # pragma: no cover
    pass

# Without COMFYUI_PATH the integration folder is not collected: tests/test_comfyui_trees.py runs it once per real
# ComfyUI tree in its own process (ComfyUI's modules can be imported only once per process).
collect_ignore = [] if os.environ.get("COMFYUI_PATH") else ["integration"]
