"""The reference branches against independent brute-force implementations (explicit masks, loops)."""
import pytest
import torch

from comfyui_vorta.vorta.geometry import TokenGrid
from comfyui_vorta.vorta.reference import coreset_attention, full_attention, sliding_tile_attention

from brute_force import coreset_brute, masked_attention, sliding_mask, with_text_mask

TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


def rand(B, h, S, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, S, D, generator=g).to(dtype) for _ in range(3)]


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def brute_with_text(q, k, v, video_mask, T, valid):
    B = q.shape[0]
    outs = []
    for b in range(B):
        nv = T if valid is None else int(valid[b])
        outs.append(masked_attention(q[b], k[b], v[b], with_text_mask(video_mask, T, nv)[None]))
    return torch.stack(outs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid,tile,window,heads", [
    ((4, 6, 8), (2, 3, 4), (3, 3, 3), 1),    # divisible
    ((5, 7, 9), (2, 3, 2), (3, 3, 3), 3),    # ragged
    ((6, 6, 10), (2, 2, 2), (3, 1, 3), 2),   # tile grid larger than the window
])
@pytest.mark.parametrize("T,valid", [(0, None), (5, [5, 3])])
def test_sliding_matches_explicit_mask(dtype, grid, tile, window, heads, T, valid):
    g = TokenGrid(*grid)
    q, k, v = rand(2, heads, g.numel + T, 32, dtype, seed=(grid[0] * 100 + grid[1] * 10 + grid[2] + T) % 1000)  # fixed seed
    tv = None if valid is None else torch.tensor(valid)
    out = sliding_tile_attention(q, k, v, g, tile, window, T, tv)
    assert out.dtype == dtype and out.shape == q.shape
    ref = brute_with_text(q, k, v, sliding_mask(*grid, tile, window), T, valid)
    assert rel(out, ref) < TOL[dtype]
    if valid is not None:
        assert bool((out[1, :, g.numel + 3:] == 0).all())  # padded text rows are 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T,valid", [(0, None), (4, [4, 1])])
def test_full_matches_explicit_mask(dtype, T, valid):
    q, k, v = rand(2, 3, 30 + T, 16, dtype, seed=7)
    tv = None if valid is None else torch.tensor(valid)
    out = full_attention(q, k, v, T, tv)
    ref = brute_with_text(q, k, v, torch.ones(30, 30, dtype=torch.bool), T, valid)
    assert rel(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid,bucket,ratio", [
    ((4, 6, 4), (2, 3, 2), 0.5),      # divisible, official bucket
    ((5, 7, 5), (2, 3, 2), 0.5),      # ragged buckets
    ((4, 4, 6), (2, 2, 2), 0.25),     # other bucket and ratio
])
@pytest.mark.parametrize("kv_from", ["query", "key"])
@pytest.mark.parametrize("T,valid", [(0, None), (3, [3, 2])])
def test_coreset_matches_brute_force(dtype, grid, bucket, ratio, kv_from, T, valid):
    g = TokenGrid(*grid)
    q, k, v = rand(2, 2, g.numel + T, 16, dtype, seed=11)
    tv = None if valid is None else torch.tensor(valid)
    out = coreset_attention(q, k, v, g, bucket, ratio, kv_from, T, tv)
    # the selection must agree exactly: run the brute force on the same (rounded) inputs
    ref = coreset_brute(q.float(), k.float(), v.float(), *grid, bucket, ratio, kv_from, T, valid)
    assert rel(out, ref) < TOL[dtype]


def test_coreset_worked_example_pruned_tokens_copy_center():
    g = TokenGrid(2, 3, 2)  # one bucket of 12, center local index 9
    q, k, v = rand(1, 1, 12, 8, torch.float32, seed=3)
    out = coreset_attention(q, k, v, g, (2, 3, 2), 0.5)
    same_as_center = [(out[0, 0, i] == out[0, 0, 9]).all().item() for i in range(12)]
    assert sum(same_as_center) == 1 + 6  # the center itself + the 6 pruned margins


def test_wan_and_hunyuan_selection_differ():
    g = TokenGrid(4, 6, 4)
    q, k, v = rand(1, 2, g.numel, 16, torch.float32, seed=5)
    a = coreset_attention(q, k, v, g, (2, 3, 2), 0.5, "query")
    b = coreset_attention(q, k, v, g, (2, 3, 2), 0.5, "key")
    assert not torch.allclose(a, b)


def test_sliding_reference_scores_in_bounded_chunks(monkeypatch):
    """The Wan-14B tiling (5x9x8 tokens, ragged along every axis here): the reference never scores more than its
    chunk bound at once (an L x L score matrix would be 3.2M values here, 117M at 720p), and the chunk size does not
    change the result.  One tile's keys and scores take 1.2M elements, so the smaller bound scores one tile at a
    time and the larger several."""
    from comfyui_vorta.vorta import reference

    g = TokenGrid(3, 22, 27)
    q, k, v = rand(1, 1, g.numel, 64, torch.float32, seed=1)
    scored = []
    real = reference.sdpa

    def counting_sdpa(q_, k_, v_, mask=None):
        scored.append(q_.shape[:-1].numel() * k_.shape[-2])
        return real(q_, k_, v_, mask)

    monkeypatch.setattr(reference, "sdpa", counting_sdpa)
    outs = []
    for bound in (1 << 21, 1 << 23):
        monkeypatch.setattr(reference, "_CHUNK_ELEMENTS", bound)
        scored.clear()
        outs.append(sliding_tile_attention(q, k, v, g, (5, 9, 8), (3, 3, 3)))
        assert len(scored) > 1 and max(scored) <= bound, (bound, max(scored))
    assert torch.isfinite(outs[0]).all() and torch.equal(outs[0], outs[1])
