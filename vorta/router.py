"""The learned router: per layer SiLU -> Linear(dim, heads*3) -> softmax per head (spec §1).

Routing depends only on the timestep, so decisions for every layer are computed in one batched op per
model call (``RouterSet.decide``) and a whole (step x layer x head) table can be built before sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FULL
from .timestep import router_input, timestep_sinusoid  # noqa: F401  (re-exported: the engine's input API)

NUM_BRANCHES = 3


class Router(nn.Module):
    """One self-attention layer's router; output (B, heads, 3) probabilities, branch order full/coreset/sliding."""

    def __init__(self, dim: int, heads: int, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.linear = nn.Linear(dim, heads * NUM_BRANCHES, bias=True, device=device, dtype=dtype)

    def forward(self, temb: torch.Tensor) -> torch.Tensor:
        x = F.silu(temb.to(self.linear.weight.dtype))
        return self.linear(x).unflatten(-1, (self.heads, NUM_BRANCHES)).softmax(dim=-1)


OFFICIAL_TAU_SPARSE = 0.3  # the official inference default; never fires (the top of three probabilities is >= 1/3)


def hard_decisions(probs: torch.Tensor, tau_sparse: float) -> torch.Tensor:
    """(..., H) branch per head from (..., B, H, 3) probabilities: top-1 of batch element 0; heads whose top
    probability is below ``tau_sparse`` fall back to full attention (official inference rule)."""
    p0 = probs.select(-3, 0)
    top = p0.amax(dim=-1)
    idx = p0.argmax(dim=-1)  # first maximal index on ties, on every backend
    return torch.where(top < tau_sparse, torch.full_like(idx, FULL), idx)


@dataclass
class RouterSet:
    """One router per routed self-attention layer, in model order.

    ``layer_names`` are the official diffusers module paths (``blocks.{i}``, ``transformer_blocks.{i}``,
    ``single_transformer_blocks.{j}``); weights are kept stacked so one einsum routes every layer."""

    family: str
    layer_names: List[str]
    weight: torch.Tensor  # (layers, heads*3, dim)
    bias: torch.Tensor  # (layers, heads*3)
    metadata: Dict[str, str] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.weight.shape[0]

    @property
    def heads(self) -> int:
        return self.weight.shape[1] // NUM_BRANCHES

    @property
    def dim(self) -> int:
        return self.weight.shape[2]

    def to(self, device=None, dtype=None) -> "RouterSet":
        return RouterSet(self.family, list(self.layer_names), self.weight.to(device, dtype), self.bias.to(device, dtype),
                         dict(self.metadata))

    def router(self, layer: int) -> Router:
        """A standalone nn.Module for one layer (training and tests)."""
        r = Router(self.dim, self.heads, device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            r.linear.weight.copy_(self.weight[layer])
            r.linear.bias.copy_(self.bias[layer])
        return r

    def probabilities(self, temb: torch.Tensor) -> torch.Tensor:
        """(layers, B, heads, 3) softmax probabilities for a (B, dim) router input, computed in the weights'
        dtype with the same ops as the official bf16 routers (one F.linear per layer: bit-identical logits)."""
        x = F.silu(temb.to(self.weight.dtype))
        logits = torch.stack([F.linear(x, w, b) for w, b in zip(self.weight, self.bias)])
        return logits.unflatten(-1, (self.heads, NUM_BRANCHES)).softmax(dim=-1)

    def decide(self, temb: torch.Tensor, tau_sparse: float = OFFICIAL_TAU_SPARSE) -> torch.Tensor:
        """(layers, heads) int64 branch per head for the current step (batch element 0 decides)."""
        return hard_decisions(self.probabilities(temb), tau_sparse)


def branch_shares(decisions: torch.Tensor) -> List[float]:
    """Share of heads per branch (full, coreset, sliding) in a decision tensor of any shape."""
    counts = torch.bincount(decisions.reshape(-1).cpu(), minlength=NUM_BRANCHES).double()
    return (counts / max(1.0, float(counts.sum()))).tolist()


def make_random_routers(family: str, layer_names: Sequence[str], dim: int, heads: int, seed: int = 0,
                        dtype=torch.bfloat16) -> RouterSet:
    """Deterministic random routers with nn.Linear's default init (demos and tests)."""
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(dim)
    n = len(layer_names)
    w = (torch.rand(n, heads * NUM_BRANCHES, dim, generator=g) * 2 - 1) * bound
    b = (torch.rand(n, heads * NUM_BRANCHES, generator=g) * 2 - 1) * bound
    return RouterSet(family, list(layer_names), w.to(dtype), b.to(dtype))


def official_layer_names(family: str, num_layers: Optional[int] = None, double: int = 20, single: int = 40) -> List[str]:
    """Official (diffusers) module paths of the routed layers, in model order."""
    if family == "wan":
        return [f"blocks.{i}" for i in range(num_layers if num_layers is not None else 40)]
    if family == "hunyuan":
        return [f"transformer_blocks.{i}" for i in range(double)] + [f"single_transformer_blocks.{j}" for j in range(single)]
    raise ValueError(f"unknown model family {family!r}")
