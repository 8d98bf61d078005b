"""Fresh float buffers filled with NaN while a kernel runs, so a buffer row that a launch forgets to write
shows in the output instead of passing on lucky zeros.  (Integer buffers are left alone: a poisoned index
would make the test itself read out of bounds.)"""
import contextlib

import torch


def _poison(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan")) if t.dtype.is_floating_point else t


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty / empty_like return NaN-filled float tensors inside the block (the kernels' launchers
    allocate with them; the Triton interpreter itself does not)."""
    empty, empty_like = torch.empty, torch.empty_like
    torch.empty = lambda *a, **kw: _poison(empty(*a, **kw))
    torch.empty_like = lambda *a, **kw: _poison(empty_like(*a, **kw))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = empty, empty_like
