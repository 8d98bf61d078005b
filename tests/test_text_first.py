"""HunyuanVideo's text-first sequences (ComfyUI >= 0.13: [text, video]) in every branch, reference and kernels.

Two oracles that do not share the code's layout handling: permutation equivariance (a text-first problem's
output equals the text-last output with the text rows moved the same way) and the brute force, whose masks
are built from each row's role in the sequence."""
import pytest
import torch

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import TokenGrid
from comfyui_vorta.vorta.routing import REFERENCE_BRANCHES, AttentionProblem, routed_attention

from brute_force import coreset_brute, masked_attention, sliding_mask, with_text_mask

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
CFG = VortaConfig(tile=(2, 2, 3), window=(3, 3, 3), bucket=(2, 3, 2), ratio=0.5)
BRANCH = {"full": 0, "coreset": 1, "sliding": 2}
# grid, heads, batch, text length, valid text per batch element (None: all valid), routed heads
CASES = [
    ((3, 4, 7), 3, 2, 5, [5, 2], [0, 2]),
    ((2, 5, 6), 2, 1, 1, None, [1]),
    ((4, 3, 5), 4, 3, 7, [0, 7, 3], [0, 1, 2, 3]),
]


def to_text_first(x: torch.Tensor, L: int) -> torch.Tensor:
    """[B, S, ...] rows [video, text] -> [text, video]."""
    return torch.cat([x[:, L:], x[:, :L]], 1)


def backends():
    out = [pytest.param(REFERENCE_BRANCHES, id="torch")]
    try:
        from comfyui_vorta.vorta.kernels.launch import TRITON_BRANCHES

        out.append(pytest.param(TRITON_BRANCHES, id="triton"))
    except ImportError:  # pragma: no cover - no triton
        pass
    return out


def run(branches, case, branch, text_first, dtype=torch.float32, seed=0, all_heads=False):
    """Routed attention with ``case``'s routed heads (or every head) on ``branch``, the others full."""
    grid, H, B, T, valid, routed = case
    g = TokenGrid(*grid)
    L, D = g.numel, 32
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, L + T, H * D, generator=gen).to(DEV, dtype) for _ in range(3))  # text-last, Wan layout
    tv = None if valid is None else torch.tensor(valid, device=DEV)
    decisions = torch.zeros(H, dtype=torch.long)
    decisions[slice(None) if all_heads else routed] = BRANCH[branch]
    p = AttentionProblem(g, CFG, kv_from="key", text_len=T, text_valid=tv, text_first=text_first)
    if text_first:
        q, k, v = (to_text_first(x, L) for x in (q, k, v))
    out = routed_attention(q, k, v, H, decisions, p, layout="wan", branches=branches)
    return out.view(B, L + T, H, D), (q, k, v)


@pytest.mark.parametrize("branches", backends())
@pytest.mark.parametrize("branch", ["full", "coreset", "sliding"])
@pytest.mark.parametrize("case", CASES, ids=["padded", "one-token", "batch3-h4"])
def test_text_first_equals_text_last_with_rows_moved(branches, branch, case):
    grid = case[0]
    L = TokenGrid(*grid).numel
    last, _ = run(branches, case, branch, False)
    first, _ = run(branches, case, branch, True)
    assert torch.isfinite(first).all()
    assert torch.equal(to_text_first(last, L), first), f"{branch} ({branches.name}): text-first != moved text-last"


@pytest.mark.parametrize("branches", backends())
@pytest.mark.parametrize("branch", ["full", "coreset", "sliding"])
def test_text_first_matches_brute_force_from_positions(branches, branch):
    case = CASES[0]
    grid, H, B, T, valid, routed = case
    F_, H_, W_ = grid
    L, D = F_ * H_ * W_, 32
    out, (q, k, v) = run(branches, case, branch, True, seed=3, all_heads=True)
    qh, kh, vh = (x.view(B, L + T, H, D).transpose(1, 2).cpu() for x in (q, k, v))
    for b in range(B):
        if branch == "coreset":
            ref = coreset_brute(qh[b:b + 1], kh[b:b + 1], vh[b:b + 1], F_, H_, W_, CFG.bucket, CFG.ratio, "key", T,
                                [valid[b]], text_first=True)[0]
        else:
            video = torch.ones(L, L, dtype=torch.bool) if branch == "full" else sliding_mask(F_, H_, W_, CFG.tile, CFG.window)
            ref = masked_attention(qh[b], kh[b], vh[b], with_text_mask(video, T, valid[b], text_first=True)[None])
        got = out[b].transpose(0, 1).cpu().double()
        err = float((got - ref).norm() / ref.norm())
        # fp32 dots: exact on the CPU (interpreter, PyTorch); a GPU's tensor cores take fp32 as TF32 (10-bit mantissa)
        tol = 2e-3 if out.is_cuda and branches.name != "torch" else 1e-5
        assert err < tol, f"{branch} ({branches.name}) batch {b}: relative error {err:.2e}"
