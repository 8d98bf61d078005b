"""Test session set-up: Triton kernels run through the interpreter when there is no CUDA GPU."""
import os

try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

# Without COMFYUI_PATH the integration folder is not collected: tests/test_comfyui_trees.py runs it once per real
# ComfyUI tree in its own process (ComfyUI's modules can be imported only once per process).
collect_ignore = [] if os.environ.get("COMFYUI_PATH") else ["integration"]
