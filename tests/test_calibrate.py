"""Calibration engine: planted heads are recovered, and the reported errors equal errors measured independently
with the reference branches (``vorta.reference``) on the same rows."""
from __future__ import annotations

import math

import pytest
import torch

from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.calibrate import CallErrors, branch_errors, output_errors, relative_error, sample_rows
from comfyui_vorta.vorta.calibration_table import CalibrationTable
from comfyui_vorta.vorta.config import CORESET, FULL, SLIDING, VortaConfig
from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid
from comfyui_vorta.vorta.routing import AttentionProblem

GRID = TokenGrid(5, 10, 10)
CONFIG = VortaConfig(tile=(1, 2, 2), window=(3, 3, 3), bucket=(1, 2, 2), ratio=0.5)


def planted_heads(batch: int = 2, dim: int = 16, seed: int = 0):
    """[B, S, 3, D] q/k/v whose heads are built to be: 0 local (all attention inside the sliding window: sliding
    exact), 1 redundant inside coreset buckets (every token of a bucket identical: coreset exact), 2 global (random,
    nearly uniform attention: neither sparse branch exact)."""
    g = torch.Generator().manual_seed(seed)
    L = GRID.numel
    pos = GRID.coords().double()
    alpha = 5.0 * math.sqrt(dim)  # q.k / sqrt(D) = -5 |p_i - p_j|^2: neighbours 2 tokens away weigh e^-20
    q0 = torch.zeros(L, dim, dtype=torch.float64)
    k0 = torch.zeros(L, dim, dtype=torch.float64)
    q0[:, :3], q0[:, 3], q0[:, 4] = 2 * alpha * pos, -alpha, -alpha * (pos * pos).sum(1)
    k0[:, :3], k0[:, 3], k0[:, 4] = pos, (pos * pos).sum(1), 1.0
    members = BucketLayout(GRID, CONFIG.bucket, CONFIG.ratio).members()
    bucket_of = torch.empty(L, dtype=torch.long)
    for b, row in enumerate(members):
        bucket_of[row[row >= 0]] = b
    G = members.shape[0]
    per_bucket = [torch.randn(G, dim, generator=g, dtype=torch.float64) * s for s in (0.3, 0.3, 1.0)]
    q1, k1, v1 = (x[bucket_of] for x in per_bucket)
    q2, k2 = (torch.randn(L, dim, generator=g, dtype=torch.float64) * 0.3 for _ in range(2))
    out = []
    for qs in ((q0, q1, q2), (k0, k1, k2)):
        out.append(torch.stack(qs, 1))
    v = torch.stack([torch.randn(L, dim, generator=g, dtype=torch.float64), v1,
                     torch.randn(L, dim, generator=g, dtype=torch.float64)], 1)
    q, k = out
    return tuple(x.float()[None].expand(batch, -1, -1, -1).contiguous() for x in (q, k, v))


def independent_errors(q, k, v, p: AttentionProblem, rows: torch.Tensor) -> torch.Tensor:
    """(3, H) relative L2 of every branch on ``rows`` (sequence rows), from the whole-sequence references."""
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    args = (p.text_len, p.text_valid, p.text_first)
    full = reference.full_attention(qh, kh, vh, *args)
    core = reference.coreset_attention(qh, kh, vh, p.grid, p.config.bucket, p.config.ratio, p.kv_from, *args)
    slide = reference.sliding_tile_attention(qh, kh, vh, p.grid, p.config.tile, p.config.window, *args)
    ref = full[:, :, rows].double()

    def rel(o):
        d = o[:, :, rows].double() - ref
        return ((d * d).sum((0, 2, 3)) / (ref * ref).sum((0, 2, 3))).sqrt()

    return torch.stack([torch.zeros(q.shape[2], dtype=torch.float64), rel(core), rel(slide)])


def test_planted_heads_are_recovered_and_errors_match_the_references():
    q, k, v = planted_heads()
    p = AttentionProblem(GRID, CONFIG)
    c = branch_errors(q, k, v, p, fraction=1.0)
    e = relative_error(c.err_sq, c.ref_sq)
    assert e[SLIDING, 0] < 1e-5 and e[CORESET, 0] > 0.3  # local
    assert e[CORESET, 1] < 1e-5 and e[SLIDING, 1] > 0.3  # redundant inside buckets
    assert e[CORESET, 2] > 0.3 and e[SLIDING, 2] > 0.3  # global
    assert torch.equal(e[FULL], torch.zeros(3, dtype=e.dtype))
    want = independent_errors(q, k, v, p, torch.arange(GRID.numel))
    torch.testing.assert_close(e, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fraction,salt", [(0.1, 0), (0.1, 7), (0.3, 123)])
def test_sampled_errors_equal_independent_errors_on_the_sampled_rows(fraction, salt):
    q, k, v = planted_heads(seed=1)
    p = AttentionProblem(GRID, CONFIG)
    s = sample_rows(p, fraction, salt)
    assert s.tiles.numel() == math.ceil(fraction * 125) and s.tiles.unique().numel() == s.tiles.numel()
    e = branch_errors(q, k, v, p, fraction=fraction, salt=salt)
    assert e.rows == s.count * q.shape[0]
    torch.testing.assert_close(relative_error(e.err_sq, e.ref_sq), independent_errors(q, k, v, p, s.rows), rtol=1e-5,
                               atol=1e-6)


def test_salts_spread_the_sample_over_the_grid():
    p = AttentionProblem(GRID, CONFIG)
    seen = torch.cat([sample_rows(p, 0.1, salt).tiles for salt in range(40)]).unique()
    assert seen.numel() > 100  # of 125 tiles
    assert sample_rows(p, 1.0).tiles.tolist() == list(range(125))
    with pytest.raises(ValueError, match="fraction"):
        sample_rows(p, 0.0)


@pytest.mark.parametrize("text_first,valid", [(False, None), (False, (5, 2)), (True, (3, 5))])
def test_text_tokens_and_padding_hunyuan_style(text_first, valid):
    g = torch.Generator().manual_seed(3)
    grid, cfg = TokenGrid(4, 6, 8), VortaConfig(tile=(1, 2, 2), bucket=(2, 2, 2))
    tv = None if valid is None else torch.tensor(valid)
    p = AttentionProblem(grid, cfg, kv_from="key", text_len=5, text_valid=tv, text_first=text_first)
    q, k, v = (torch.randn(2, p.seq_len, 3, 16, generator=g) for _ in range(3))
    e = branch_errors(q, k, v, p, fraction=0.5, salt=2)
    rows = sample_rows(p, 0.5, 2).rows + p.video_row0
    torch.testing.assert_close(relative_error(e.err_sq, e.ref_sq), independent_errors(q, k, v, p, rows), rtol=1e-5,
                               atol=1e-6)


def test_dense_output_as_reference_and_small_memory_chunks_change_nothing():
    q, k, v = planted_heads(seed=2)
    p = AttentionProblem(GRID, CONFIG)
    full = reference.full_attention(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    a = branch_errors(q, k, v, p, fraction=0.3, salt=5)
    for b in (branch_errors(q, k, v, p, full_out=full, fraction=0.3, salt=5, max_elements=3000),
              branch_errors(q, k, v, p, fraction=0.3, salt=5, max_elements=3000)):  # query chunks of 6 rows on the CPU
        torch.testing.assert_close(a.err_sq, b.err_sq, rtol=1e-6, atol=1e-9)  # fp32 GEMMs of other sizes
        torch.testing.assert_close(a.ref_sq, b.ref_sq, rtol=1e-6, atol=1e-9)


def test_output_errors_audit_a_routed_output():
    q, k, v = planted_heads(seed=4)
    p = AttentionProblem(GRID, CONFIG)
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    slide = reference.sliding_tile_attention(qh, kh, vh, GRID, CONFIG.tile, CONFIG.window).transpose(1, 2)
    err, ref = output_errors(q, k, v, slide, p, [0, 2], fraction=0.2, salt=1)
    got = relative_error(err, ref)
    rows = sample_rows(p, 0.2, 1).rows
    want = independent_errors(q, k, v, p, rows)[SLIDING, [0, 2]]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_relative_error_edge_cases():
    err = torch.tensor([[0.0, 1.0, float("nan")]], dtype=torch.float64)
    ref = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    r = relative_error(err, ref)
    assert r[0, 0] == 0 and r[0, 1] == math.inf and math.isnan(r[0, 2])


def test_table_pools_calls_at_one_timestep_like_one_batch():
    """Cond and uncond as two calls at one t give the error of the batched call; other t stay apart."""
    q, k, v = planted_heads(batch=2, seed=5)
    q = q + 0.01 * torch.randn(q.shape, generator=torch.Generator().manual_seed(9))  # batch elements differ
    p = AttentionProblem(GRID, CONFIG)
    both = branch_errors(q, k, v, p, fraction=0.2, salt=3)
    table = CalibrationTable(layers=2, heads=3)
    for b in range(2):
        table.add(500.0, 0.5, 1, branch_errors(q[b:b + 1], k[b:b + 1], v[b:b + 1], p, fraction=0.2, salt=3))
    table.add(900.0, 0.9, 0, both)
    table.skip("a reason")
    cal = table.result()
    assert cal.t.tolist() == [900.0, 500.0] and cal.calls.tolist() == [[1, 0], [0, 2]]
    torch.testing.assert_close(cal.errors[1, 1], relative_error(both.err_sq, both.ref_sq).T)
    torch.testing.assert_close(cal.errors[0, 0], relative_error(both.err_sq, both.ref_sq).T)
    assert torch.isnan(cal.errors[0, 1]).all() and torch.isnan(cal.errors[1, 0]).all()  # never measured
    assert cal.skipped == {"a reason": 1} and cal.rows == 2 * both.rows


def test_empty_table_says_why():
    with pytest.raises(ValueError, match="no self-attention call"):
        CalibrationTable(1, 1).result()


def test_relative_error_per_branch_of_one_call():
    e = CallErrors(torch.tensor([[0.0], [4.0], [1.0]], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64), 1)
    assert relative_error(e.err_sq, e.ref_sq).flatten().tolist() == [0.0, 1.0, 0.5]


@pytest.mark.parametrize("grid,bucket,ratio", [((5, 10, 10), (1, 2, 2), 0.5), ((5, 7, 9), (2, 3, 2), 0.5),
                                               ((3, 5, 7), (2, 2, 2), 0.25)])
def test_cached_selection_equals_the_reference_selection(grid, bucket, ratio):
    """The calibration's coreset selection (cached device tables) is the oracle's, ties and NaN included."""
    from comfyui_vorta.vorta.calibrate import _bucket_tables, _select

    g = TokenGrid(*grid)
    x = torch.randint(-2, 3, (2, 3, g.numel, 8), generator=torch.Generator().manual_seed(0)).float()  # many ties
    x[0, 1, 5] = float("nan")
    x[1, 2, 7, 3] = float("inf")
    layout = BucketLayout(g, bucket, ratio)
    assert torch.equal(_select(x, _bucket_tables(g, bucket, ratio, "cpu")), reference.coreset_select(x, layout))
