import pytest
import torch

from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import TokenGrid
from comfyui_vorta.vorta.routing import AttentionProblem, attention_flops, head_groups, routed_attention


@pytest.mark.parametrize("layout", ["wan", "hunyuan"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_routed_output_is_each_heads_branch_in_head_order(layout, dtype):
    grid, H, D, B = TokenGrid(3, 7, 6), 5, 16, 2
    T = 4 if layout == "hunyuan" else 0
    cfg = VortaConfig(tile=(2, 3, 2), bucket=(2, 3, 2))
    problem = AttentionProblem(grid, cfg, kv_from="key" if layout == "hunyuan" else "query", text_len=T,
                               text_valid=torch.tensor([4, 2]) if T else None)
    g = torch.Generator().manual_seed(0)
    qh, kh, vh = (torch.randn(B, H, grid.numel + T, D, generator=g).to(dtype) for _ in range(3))
    if layout == "wan":
        q, k, v = (x.transpose(1, 2).reshape(B, -1, H * D) for x in (qh, kh, vh))
    else:
        q, k, v = qh, kh, vh
    decisions = torch.tensor([2, 0, 1, 2, 1])
    out = routed_attention(q, k, v, H, decisions, problem, layout=layout)
    assert out.shape == (B, grid.numel + T, H * D) and out.dtype == dtype
    out = out.view(B, -1, H, D)
    refs = {
        0: reference.full_attention(qh, kh, vh, T, problem.text_valid),
        1: reference.coreset_attention(qh, kh, vh, grid, cfg.bucket, cfg.ratio, problem.kv_from, T, problem.text_valid),
        2: reference.sliding_tile_attention(qh, kh, vh, grid, cfg.tile, cfg.window, T, problem.text_valid),
    }
    for h, b in enumerate(decisions.tolist()):
        assert torch.allclose(out[:, :, h].float(), refs[b][:, h].float(), atol=1e-2 if dtype == torch.bfloat16 else 1e-5)


def test_head_groups_and_flops():
    groups = head_groups(torch.tensor([2, 2, 0, 1, 2]))
    assert [g.tolist() for g in groups] == [[2], [3], [0, 1, 4]]
    p = AttentionProblem(TokenGrid(20, 45, 80), VortaConfig())
    fl = attention_flops(p, 1, [0, 10, 30])
    assert abs(fl["coreset"] / (10 * fl["dense"] / 40) - 0.25) < 1e-9
    assert abs(fl["sliding"] / (30 * fl["dense"] / 40) - 0.135) < 1e-9


def test_sequence_length_mismatch_is_a_clear_error():
    p = AttentionProblem(TokenGrid(2, 3, 4), VortaConfig())
    q = torch.randn(1, 25, 2 * 8)
    with pytest.raises(ValueError, match="24"):
        routed_attention(q, q, q, 2, torch.tensor([0, 1]), p)
