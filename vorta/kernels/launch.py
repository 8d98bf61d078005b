"""The Triton ``Branches`` for ``vorta.routing.routed_attention``: one custom op per sparse branch
(``sliding_launch.py``, ``coreset_launch.py``); full heads use the routing reference (PyTorch SDPA)."""
from __future__ import annotations

from functools import partial

from ..checks import KERNEL_HEAD_DIMS
from ..routing import Branches, reference_full
from .coreset_launch import coreset_op, triton_coreset
from .sliding_launch import sliding_tile_op, triton_sliding

__all__ = ["TRITON_8BIT_BRANCHES", "TRITON_BRANCHES", "coreset_op", "sliding_tile_op", "triton_coreset",
           "triton_sliding"]

# full heads: the reference branch is PyTorch SDPA (cuDNN/flash on a GPU); in ComfyUI the previous backend serves them
TRITON_BRANCHES = Branches(full=reference_full, coreset=triton_coreset, sliding=triton_sliding, name="triton",
                           sparse_head_dims=KERNEL_HEAD_DIMS)
# the 8-bit path for both sparse branches (INT8 Q·K, FP8 P·V; compute capability 8.9+); full heads as above
TRITON_8BIT_BRANCHES = Branches(full=reference_full, coreset=partial(triton_coreset, quant=True),
                                sliding=partial(triton_sliding, quant=True), name="triton-8bit",
                                sparse_head_dims=KERNEL_HEAD_DIMS)
