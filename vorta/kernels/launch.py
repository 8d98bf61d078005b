"""The Triton ``Branches`` for ``vorta.routing.routed_attention``: one custom op per sparse branch
(``sliding_launch.py``, ``coreset_launch.py``); full heads use the routing reference (PyTorch SDPA)."""
from __future__ import annotations

from ..checks import KERNEL_HEAD_DIMS
from ..routing import Branches, reference_full
from .coreset_launch import coreset_op, triton_coreset
from .sliding_launch import sliding_tile_op, triton_sliding

__all__ = ["TRITON_BRANCHES", "coreset_op", "sliding_tile_op", "triton_coreset", "triton_sliding"]

# full heads: the reference branch is PyTorch SDPA (cuDNN/flash on a GPU); in ComfyUI the previous backend serves them
TRITON_BRANCHES = Branches(full=reference_full, coreset=triton_coreset, sliding=triton_sliding, name="triton",
                           sparse_head_dims=KERNEL_HEAD_DIMS)
