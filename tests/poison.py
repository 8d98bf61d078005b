"""Fresh buffers filled with NaN, with guard zones, while a kernel runs: a buffer row that a launch forgets to
write shows in the output instead of passing on lucky zeros, and a write past either end of a buffer changes
its guard zone (``Poisoned.check``).  Integer buffers get a sentinel instead of NaN in the guards only: a
poisoned index inside them would make the test itself read out of bounds."""
import contextlib
from typing import List, Tuple

import torch

GUARD = 256  # elements before and after every buffer (a whole row of head dim 128 and more)
SENTINEL = -7


def _fill(t: torch.Tensor, guard: bool = False) -> torch.Tensor:
    """NaN for floats; for integers the sentinel in guards, 0 inside (indices must stay in range)."""
    if t.dtype.is_floating_point:
        return t.fill_(float("nan"))
    return t.fill_(SENTINEL if guard else 0)


def guarded(shape, dtype, device, empty=torch.empty) -> Tuple[torch.Tensor, torch.Tensor]:
    """(tensor of ``shape`` filled with NaN / the sentinel, the whole buffer around it, guards included)."""
    n = 1
    for s in shape:
        n *= int(s)
    buf = _fill(empty(n + 2 * GUARD, dtype=dtype, device=device), guard=True)
    t = _fill(buf[GUARD:GUARD + n]).view(*shape)
    return t, buf


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(size) if all(isinstance(s, int) for s in size) else None


class Poisoned:
    """The buffers handed out inside ``poisoned_empty``; ``check`` names the first whose guards were written."""

    def __init__(self):
        self.buffers: List[Tuple[torch.Tensor, tuple]] = []

    def check(self) -> str:
        for buf, shape in self.buffers:
            for zone in (buf[:GUARD], buf[-GUARD:]):
                ok = torch.isnan(zone).all() if buf.dtype.is_floating_point else (zone == SENTINEL).all()
                if not bool(ok):
                    return f"a write past a {tuple(shape)} {buf.dtype} buffer"
        return ""


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty / empty_like return NaN-filled, guarded tensors inside the block (the kernels' launchers
    allocate with them; the Triton interpreter itself does not).  Yields a ``Poisoned`` to check afterwards."""
    empty, empty_like = torch.empty, torch.empty_like
    record = Poisoned()

    def new_empty(*size, dtype=None, device=None, **kw):
        shape = _shape(size)
        if kw or shape is None:
            return _fill(empty(*size, dtype=dtype, device=device, **kw))
        t, buf = guarded(shape, dtype or torch.get_default_dtype(), device, empty)
        record.buffers.append((buf, shape))
        return t

    def new_empty_like(x, *, dtype=None, device=None, **kw):
        if kw:
            return _fill(empty_like(x, dtype=dtype, device=device, **kw))
        return new_empty(*x.shape, dtype=dtype or x.dtype, device=device or x.device)

    torch.empty, torch.empty_like = new_empty, new_empty_like
    try:
        with torch.no_grad():
            yield record
    finally:
        torch.empty, torch.empty_like = empty, empty_like
