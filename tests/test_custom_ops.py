"""The kernels are torch.library custom ops, so torch.compile sees each as one call (no graph break)."""
import pytest
import torch

pytest.importorskip("triton")

from comfyui_vorta.vorta.kernels.launch import coreset_op, sliding_tile_op  # noqa: E402
from comfyui_vorta.vorta.geometry import TokenGrid  # noqa: E402
from comfyui_vorta.vorta.reference import coreset_attention, sliding_tile_attention  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def test_ops_compile_fullgraph_and_match_reference():
    g = TokenGrid(2, 4, 6)
    B, S, H, D = 1, g.numel, 2, 32
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(B, S, H, D, generator=gen).to(DEV) for _ in range(3))
    heads = torch.tensor([1], dtype=torch.int32, device=DEV)

    def both(q, k, v):
        out = torch.full((B, S, H, D), float("nan"), device=DEV)  # poison: a row the op forgets stays NaN
        sliding_tile_op(q, k, v, heads, out, [2, 4, 6], [1, 2, 3], [3, 3, 3], 0, None)
        out2 = torch.full((B, S, H, D), float("nan"), device=DEV)
        coreset_op(q, k, v, heads, out2, [2, 4, 6], [2, 3, 2], 0.5, False, 0, None)
        return out, out2

    torch._dynamo.reset()
    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    out, out2 = compiled(q, k, v)
    qh, kh, vh = (x.transpose(1, 2)[:, 1:].cpu() for x in (q, k, v))
    ref = sliding_tile_attention(qh, kh, vh, g, (1, 2, 3), (3, 3, 3))
    ref2 = coreset_attention(qh, kh, vh, g, (2, 3, 2), 0.5)
    tol = 2e-3 if DEV == "cuda" else 1e-5  # fp32 tl.dot runs in TF32 on a GPU

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    assert rel(out[:, :, 1].cpu(), ref[:, 0]) < tol
    assert rel(out2[:, :, 1].cpu(), ref2[:, 0]) < tol
    assert torch.isfinite(out[:, :, 1]).all() and torch.isfinite(out2[:, :, 1]).all()  # every routed row written
    assert torch.isnan(out[:, :, 0]).all() and torch.isnan(out2[:, :, 0]).all()  # the other head left alone
