"""Triton kernels for the sparse branches and the backend choice.

Each kernel's docstring names the function in ``vorta.reference`` it must equal.  ``select_branches`` is
the single entry point the engine uses: it returns the Triton branches where Triton and a CUDA GPU are
available and the pure-PyTorch reference otherwise, logging the reason once.
"""
from __future__ import annotations

from typing import Optional

from .log import log_once


def triton_unavailable_reason(device=None) -> Optional[str]:
    """Why the Triton kernels cannot run here, or None when they can."""
    import torch

    if device is not None and torch.device(device).type != "cuda":
        return f"tensors are on {torch.device(device).type}, the Triton kernels need a CUDA GPU"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    try:
        import triton  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"triton is not importable ({e})"
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        return f"GPU compute capability {major}.x < 8.0 (bf16 tensor cores needed)"
    return None


def backend_unavailable_reason(backend: str, device=None) -> Optional[str]:
    """Why the Triton kernels of ``backend`` ('auto'/'triton': bf16, 'triton-8bit') cannot run here, or None."""
    reason = triton_unavailable_reason(device)
    if reason is None and backend == "triton-8bit":
        from .common import quant_unavailable_reason

        reason = quant_unavailable_reason(device if device is not None else "cuda")
    return reason


BACKENDS = ("auto", "triton", "triton-8bit", "torch")  # what select_branches accepts


def select_branches(backend: str = "auto", device=None):
    """Branch implementations for ``vorta.routing.routed_attention``, one of ``BACKENDS``.
    'auto' runs the bf16 kernels: the 8-bit path is opt-in (its error depends on the model's activations)."""
    from ..routing import REFERENCE_BRANCHES

    if backend == "torch":
        return REFERENCE_BRANCHES
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    reason = backend_unavailable_reason(backend, device)
    if reason is None:
        try:
            from .launch import TRITON_8BIT_BRANCHES, TRITON_BRANCHES

            return TRITON_8BIT_BRANCHES if backend == "triton-8bit" else TRITON_BRANCHES
        except ImportError as e:
            reason = f"the Triton kernels failed to load ({e})"
    if backend != "auto":
        raise RuntimeError(f"kernel backend {backend!r} requested but unavailable: {reason}. Use 'auto' or 'torch'.")
    log_once(f"VORTA: using the PyTorch reference branches ({reason}); expect little or no speed-up.")
    return REFERENCE_BRANCHES
