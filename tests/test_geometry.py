import einops
import pytest
import torch

from comfyui_vorta.vorta.geometry import (BucketLayout, TileLayout, TokenGrid, grid_from_latent, key_tile_table,
                                          sliding_density, visible_key_tiles)

from brute_force import sliding_mask


def test_wan14b_worked_facts():
    grid = TokenGrid(20, 45, 80)
    layout = TileLayout(grid, (5, 9, 8))
    assert layout.tile_grid == (4, 5, 10) and layout.num_tiles == 200 and layout.tile_tokens == 360
    allowed = visible_key_tiles(layout, (3, 3, 3))
    assert int(allowed.sum(1).min()) == int(allowed.sum(1).max()) == 27
    table = key_tile_table(grid, (5, 9, 8), (3, 3, 3))
    assert table.shape == (200, 27) and bool((table >= 0).all())
    # tile (3,4,9) sees t in {1,2,3}, h in {2,3,4}, w in {7,8,9}
    i = (3 * 5 + 4) * 10 + 9
    seen = {(int(j) // 50, (int(j) // 10) % 5, int(j) % 10) for j in table[i]}
    assert seen == {(a, b, c) for a in (1, 2, 3) for b in (2, 3, 4) for c in (7, 8, 9)}
    assert abs(sliding_density(grid, (5, 9, 8), (3, 3, 3)) - 0.135) < 1e-9


def _one_bucket(bucket, ratio):
    return BucketLayout(TokenGrid(*bucket), bucket, ratio)


def test_bucket_worked_facts():
    """The rules the reference and the kernels use (BucketLayout's own tables), on worked examples."""
    assert int(_one_bucket((2, 3, 2), 0.5).keep_count()[0]) == 5  # center + 5 = 6 of 12 kept
    assert int(_one_bucket((2, 3, 2), 0.5).center_slot()[0]) == 9
    assert int(_one_bucket((2, 2, 2), 0.5).keep_count()[0]) == 3
    assert int(_one_bucket((2, 3, 2), 0.25).keep_count()[0]) == 8
    assert int(_one_bucket((1, 2, 2), 0.75).keep_count()[0]) == 0
    layout = BucketLayout(TokenGrid(20, 45, 80), (2, 3, 2), 0.5)
    assert layout.num_buckets == 6000 and layout.pooled_length == 36000
    assert bool((layout.center_slot() == 9).all()) and bool((layout.keep_count() == 5).all())


@pytest.mark.parametrize("grid,tile", [((4, 6, 8), (2, 3, 4)), ((20, 45, 80), (5, 9, 8))])
def test_permutation_matches_official_rearrange(grid, tile):
    g = TokenGrid(*grid)
    layout = TileLayout(g, tile)
    x = torch.arange(g.numel)
    official = einops.rearrange(x, "(nf tf nh th nw tw) -> (nf nh nw tf th tw)", tf=tile[0], th=tile[1], tw=tile[2],
                                nh=grid[1] // tile[1], nw=grid[2] // tile[2])
    assert torch.equal(layout.permutation(), official)
    assert torch.equal(layout.permutation().sort().values, x)  # a permutation of every token
    assert torch.equal(layout.tile_token_index().flatten(), official)


@pytest.mark.parametrize("grid,tile", [((5, 7, 9), (2, 3, 4)), ((3, 5, 5), (5, 9, 8)), ((7, 4, 10), (3, 3, 3))])
def test_ragged_tiles_cover_every_token_once(grid, tile):
    g = TokenGrid(*grid)
    idx = TileLayout(g, tile).tile_token_index()
    real = idx[idx >= 0]
    assert torch.equal(real.sort().values, torch.arange(g.numel))
    members = BucketLayout(g, (2, 3, 2), 0.5).members()
    assert torch.equal(members[members >= 0].sort().values, torch.arange(g.numel))


@pytest.mark.parametrize("grid,tile,window", [
    ((4, 6, 8), (2, 3, 4), (3, 3, 3)),    # divisible, tile grid smaller than the window on two axes
    ((5, 7, 9), (2, 3, 2), (3, 3, 3)),    # ragged everywhere
    ((6, 6, 12), (1, 2, 2), (3, 1, 5)),   # mixed windows
    ((6, 6, 12), (1, 2, 2), (2, 2, 4)),   # even windows act like 2*(w//2)+1
])
def test_window_rule_matches_brute_force_mask(grid, tile, window):
    g = TokenGrid(*grid)
    layout = TileLayout(g, tile)
    tt = layout.token_tile()
    allowed = visible_key_tiles(layout, window)
    assert torch.equal(allowed[tt][:, tt], sliding_mask(*grid, tile, window))


def test_grid_from_latent_pads_up():
    assert grid_from_latent((3, 9, 10)).shape == (3, 5, 5)
    assert grid_from_latent((21, 90, 160)).shape == (21, 45, 80)


def test_ragged_bucket_centers_and_counts():
    layout = BucketLayout(TokenGrid(3, 4, 5), (2, 3, 2), 0.5)
    ext = layout.extents()
    sizes = ext.prod(1)
    assert int(sizes.sum()) == 60
    # a 1x1x1 bucket keeps only its center; full buckets keep 5 margins
    k = layout.keep_count()
    assert int(k[sizes == 12].unique()) == 5 and int(k[sizes == 1].unique()) == 0
    members = layout.members()
    c = members.gather(1, layout.center_slot()[:, None]).squeeze(1)
    assert bool((c >= 0).all())
