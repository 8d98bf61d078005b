"""Test session set-up: Triton kernels run through the interpreter when there is no CUDA GPU."""
import os

try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass
