"""NaN/inf stay exactly where the reference puts them (same tokens, heads, batch elements) in every load path,
and coreset selection follows one documented tie rule in the reference, the kernels and the brute force."""
import pytest
import torch

from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.geometry import BucketLayout, TokenGrid

from brute_force import buckets, select
from poison import poisoned_empty

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
KERNEL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])  # interpreter bf16 dot is wrong


def heads_first(x):
    return x.transpose(1, 2).float().cpu()


def assert_same_nonfinite_and_close(got, ref, tol, what, where=None):
    """NaN/inf in ``got`` exactly where ``where`` (default ``ref``) has them, close to ``ref`` where finite."""
    bad_got, bad_ref = ~torch.isfinite(got), ~torch.isfinite(ref if where is None else where)
    assert torch.equal(bad_got, bad_ref), (f"{what}: non-finite outputs at {bad_got.sum()} places, reference at "
                                          f"{bad_ref.sum()}; differing at {(bad_got ^ bad_ref).nonzero()[:5].tolist()}")
    ok = ~bad_got & torch.isfinite(ref)
    err = float((got[ok].double() - ref[ok].double()).norm() / ref[ok].double().norm().clamp_min(1e-12))
    assert err < tol, f"{what}: relative error {err:.2e} where finite"


# ------------------------------------------------------------------------------------------ tie rule


def tied_bucket(dtype, seed=0):
    """One (2, 3, 2) bucket (center slot 9) whose margins repeat three rows, so the keep boundary (5 of 11)
    falls inside a group of exact ties; plus one zero row (similarity exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(4, 16, generator=g)
    center = rows[0]
    a = -center + 0.3 * rows[1]  # least similar
    b = rows[2]
    c = center + 0.2 * rows[3]  # most similar
    pattern = {0: b, 1: c, 2: a, 3: b, 4: b, 5: c, 6: torch.zeros(16), 7: b, 8: a, 10: b, 11: c, 9: center}
    x = torch.stack([pattern[i] for i in range(12)])
    return x.to(dtype)[None, None]  # (1, 1, 12, 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reference_tie_rule_matches_brute_force(dtype):
    x = tied_bucket(dtype)
    layout = BucketLayout(TokenGrid(2, 3, 2), (2, 3, 2), 0.5)
    kept = reference.coreset_select(x, layout)[0, 0].tolist()
    expect, _ = select(x[0, 0].float(), buckets(2, 3, 2, (2, 3, 2)), 0.5)
    assert set(kept) == expect
    assert kept[0] == 9 and len(set(kept)) == len(kept) == 6
    # by hand: a's (slots 2, 8) are least similar; then the b's tie at slots 0, 3, 4, 7, 10 (and the zero row at
    # 6 lies between a and b or b and c depending on the draw): lower slots first among equal similarities
    sims = {i: float(torch.nn.functional.cosine_similarity(x[0, 0, i].float(), x[0, 0, 9].float(), 0)) for i in (0, 6)}
    order = [2, 8] + ([6, 0, 3, 4, 7] if sims[6] < sims[0] else [0, 3, 4, 7, 10])
    assert kept[1:] == order[:5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kv_from", ["query", "key"])
def test_kernel_tie_rule_matches_reference(dtype, kv_from):
    pytest.importorskip("triton")
    from comfyui_vorta.vorta.kernels.launch import coreset_op

    g = TokenGrid(2, 6, 4)  # 4 buckets, each with the tied pattern (shifted per bucket)
    x = torch.cat([torch.roll(tied_bucket(dtype, seed=s), s, 2) for s in range(4)], 2)  # (1, 1, 48, 16) bucket-major
    perm = BucketLayout(g, (2, 3, 2), 0.5).members().flatten()
    raster = torch.empty_like(x)
    raster[:, :, perm] = x
    gen = torch.Generator().manual_seed(1)
    k = raster if kv_from == "key" else torch.randn(raster.shape, generator=gen).to(dtype)
    v = torch.randn(raster.shape, generator=gen).to(dtype)
    q = raster
    ref = reference.coreset_attention(*(t.float() for t in (q, k, v)), g, (2, 3, 2), 0.5, kv_from)
    out = torch.full((1, 48, 1, 16), float("nan"), dtype=dtype, device=DEV)
    with poisoned_empty():
        coreset_op(*(t.transpose(1, 2).contiguous().to(DEV) for t in (q, k, v)),
                   torch.tensor([0], dtype=torch.int32, device=DEV), out, list(g.shape), [2, 3, 2], 0.5,
                   kv_from == "key", 0, None)
    assert_same_nonfinite_and_close(heads_first(out), ref, 3e-3, f"ties {dtype}")


# --------------------------------------------------------------------------------- non-finite inputs


def test_reference_nan_center_of_partial_bucket_never_picks_padding_or_duplicates():
    g = TokenGrid(3, 4, 3)  # buckets (2, 3, 2): partial along F and H
    layout = BucketLayout(g, (2, 3, 2), 0.25)
    x = torch.randn(2, 1, g.numel, 8)
    centers = layout.members().gather(1, layout.center_slot()[:, None]).squeeze(1)
    x[0, 0, centers] = float("nan")  # every center NaN: all similarities NaN
    x[1, 0, centers[-1]] = float("inf")
    kept = reference.coreset_select(x, layout)
    assert int(kept.min()) >= 0 and int(kept.max()) < g.numel
    for b in range(2):
        assert kept[b, 0].unique().numel() == kept.shape[2], "a token was kept twice"
    out = reference.coreset_attention(x, x, x, g, (2, 3, 2), 0.25)
    assert not torch.isfinite(out[0]).any()  # the NaN centers are pooled: every pooled query sees them
    assert torch.isnan(out[1]).all()  # inf center: its x/|x| is NaN, and it is a key of every query


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_coreset_kernel_nan_similarities_write_every_pooled_row_once(dtype):
    """NaN centers make every margin's similarity NaN: the ranks must still be distinct (before the fix they
    all were 0, pooled rows collided and never-written rows went into attention)."""
    pytest.importorskip("triton")
    from comfyui_vorta.vorta.kernels.launch import coreset_op

    g = TokenGrid(3, 4, 5)
    layout = BucketLayout(g, (2, 3, 2), 0.5)
    B, H, D = 2, 3, 16
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(B, g.numel, H, D, generator=gen) for _ in range(3))
    centers = layout.members().gather(1, layout.center_slot()[:, None]).squeeze(1)
    k[0, centers[:3], 1] = float("nan")  # key selection (kv_from key) by NaN similarities, batch 0 head 1
    q[1, centers[1], 2] = float("nan")  # query selection, batch 1 head 2
    q, k, v = (t.to(DEV, dtype) for t in (q, k, v))
    heads = torch.tensor([0, 1, 2], dtype=torch.int32, device=DEV)
    out = torch.full((B, g.numel, H, D), float("nan"), dtype=dtype, device=DEV)
    with poisoned_empty():
        coreset_op(q, k, v, heads, out, list(g.shape), [2, 3, 2], 0.5, True, 0, None)
    ref = reference.coreset_attention(heads_first(q), heads_first(k), heads_first(v), g, (2, 3, 2), 0.5, "key")
    # on a GPU the pooled attention is SDPA, which places NaN/inf its own way: the reference run there says where
    where = reference.coreset_attention(*(t.transpose(1, 2) for t in (q, k, v)), g, (2, 3, 2), 0.5, "key").float().cpu()
    assert_same_nonfinite_and_close(heads_first(out), ref, 3e-3, f"coreset NaN {dtype}", where)
    assert torch.isfinite(out[0, :, [0, 2]]).all() and torch.isfinite(out[1, :, [0, 1]]).all()


# Every sliding load path: pointer loads, TMA, TMA with tails in smaller blocks, pointer tails without row split.
STA_CONFIGS = ["32,32,4,1,1", "32,32,4,1,0", "32,32,4,1,1,16", "16,16,4,1,1,16,1", "32,32,4,1,0,16,0"] + (
    ["128,128,8,3,1,64", "128,64,8,3,1", "64,128,4,3,1,32"] if CUDA else [])


TMA_CONFIGS = [c for c in STA_CONFIGS if c.split(",")[4] == "1"]


@pytest.mark.parametrize("config,bad", [(c, "nan") for c in STA_CONFIGS] + [(c, "inf") for c in TMA_CONFIGS])
def test_sliding_nonfinite_stays_where_the_reference_puts_it(config, bad, monkeypatch):
    """A TMA tail block reads rows past its segment (the next window segment, head or batch element); they
    must never enter a sum.  Poisoned tokens sit at the start of a head's rows, at a batch element's first
    and last video token and in padded text."""
    pytest.importorskip("triton")
    from comfyui_vorta.vorta.kernels.launch import sliding_tile_op

    monkeypatch.setenv("VORTA_STA_CONFIG", config)
    g, tile, window = TokenGrid(2, 5, 7), (1, 2, 3), (1, 3, 1)
    B, H, D, T = 2, 3, 32, 5
    L = g.numel
    gen = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(B, L + T, H, D, generator=gen) for _ in range(3))
    val = float(bad)
    v[1, 0, 0] = val  # batch 1's first tile-ordered row of head 0: right behind batch 0's last head's text
    k[0, 7, 2] = val  # one video key
    v[0, L - 1, 2] = val
    k[1, L + 4, 2] = val  # padded text (text_valid[1] = 3): never a key
    v[1, L + 3, 0] = val
    q[0, L + 2, 0] = val  # a valid text query
    tv = torch.tensor([5, 3])
    q, k, v = (t.to(DEV, torch.float16) for t in (q, k, v))
    heads = torch.tensor([0, 2], dtype=torch.int32, device=DEV)
    out = torch.full((B, L + T, H, D), float("nan"), dtype=torch.float16, device=DEV)
    with poisoned_empty():
        sliding_tile_op(q, k, v, heads, out, list(g.shape), list(tile), list(window), T, tv.to(DEV))
    ref = reference.sliding_tile_attention(*(heads_first(t[:, :, [0, 2]]) for t in (q, k, v)), g, tile, window, T, tv)
    assert_same_nonfinite_and_close(heads_first(out[:, :, [0, 2]]), ref, 3e-3, f"sliding {config} {bad}")
    assert torch.isfinite(ref[0, 0, :L]).all() and not torch.isfinite(ref[1, 0]).all()
    assert torch.isnan(out[:, :, 1]).all(), "a head that was not routed was written"


# ------------------------------------------------- the coreset's pooled attention: one SDPA call, shared


def _coreset_problem(dtype, text_first):
    """B=2, H=3 (heads 0 and 2 routed), padded text, NaN/-inf inputs that give -inf scores and NaN rows."""
    g, T = TokenGrid(3, 4, 5), 4
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(2, g.numel + T, 3, 16, generator=gen) for _ in range(3))
    layout = BucketLayout(g, (2, 3, 2), 0.5)
    center = int(layout.members()[0, layout.center_slot()[0]])  # bucket 0's center: kept whatever the data
    k[0, center, 0, 3] = float("inf")  # a key every pooled query of (batch 0, head 0) scores +-inf
    k[0, 11, 0, 5] = float("-inf")
    q[1, 2, 2, 1] = float("nan")
    v[1, g.numel + 1, 2, 0] = float("-inf")  # a valid text value
    k[1, g.numel + 3, 0, 0] = float("nan")  # padded text (text_valid[1] = 2): never a key
    if text_first:
        q, k, v = (torch.cat([x[:, g.numel:], x[:, :g.numel]], 1) for x in (q, k, v))
    return g, T, torch.tensor([4, 2]), [x.to(DEV, dtype) for x in (q, k, v)]


@pytest.mark.parametrize("text_first", [False, True])
@pytest.mark.parametrize("kv_from", ["query", "key"])
def test_kernel_and_reference_hand_sdpa_the_same_pooled_sequence(kv_from, text_first, monkeypatch):
    """On a GPU, where NaN/inf land after the pooled attention is up to the SDPA backend (they do not follow the
    definition): the kernel and the reference make the same ``pooled_attention`` call with the same rows in the
    same order, bit for bit, so they get the same answer from any backend."""
    pytest.importorskip("triton")
    from comfyui_vorta.vorta.kernels import coreset_launch

    g, T, tv, (q, k, v) = _coreset_problem(torch.float16, text_first)
    calls, pooled_attention = [], reference.pooled_attention

    def recording(qp, kp, vp, text_len, text_valid):
        calls.append([x.float().cpu().nan_to_num(7.0, 8.0, -8.0) for x in (qp, kp, vp)] + [text_len, text_valid.tolist()])
        return pooled_attention(qp, kp, vp, text_len, text_valid)

    monkeypatch.setattr(coreset_launch, "pooled_attention", recording)
    heads = torch.tensor([0, 2], dtype=torch.int32, device=DEV)
    out = torch.full_like(q, float("nan"))
    with poisoned_empty():
        coreset_launch.coreset_op(q, k, v, heads, out, list(g.shape), [2, 3, 2], 0.5, kv_from == "key", T, tv.to(DEV),
                                  text_first)
    monkeypatch.setattr(reference, "pooled_attention", recording)
    reference.coreset_attention(*(t[:, :, [0, 2]].transpose(1, 2) for t in (q, k, v)), g, (2, 3, 2), 0.5, kv_from,
                                T, tv.to(DEV), text_first)
    kernel, ref = calls
    assert kernel[3:] == ref[3:] == [T, [4, 2]]
    for name, a, b in zip("qkv", kernel, ref):
        assert torch.equal(a, b), f"pooled {name} differs at {(a != b).nonzero()[:4].tolist()}"


def _quirky_sdpa(q, k, v, mask=None):
    """A stand-in for a GPU SDPA backend that does not follow the definition: a query with any -inf score (before
    masking) outputs NaN, as fp32 SDPA did on the H100."""
    out = reference.attention_definition(q, k, v, mask)
    s = q.float() @ k.float().transpose(-1, -2)
    return torch.where((s == float("-inf")).any(-1, keepdim=True), float("nan"), out.float()).to(out.dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="emulates a GPU backend's NaN placement on the CPU; on a GPU the "
                    "real backend is judged by tests/test_fuzz.py and bench/fuzz_device.py")
@pytest.mark.parametrize("kv_from", ["query", "key"])
def test_coreset_kernel_puts_nonfinite_where_its_sdpa_does(kv_from, monkeypatch):
    """With a backend that places NaN unlike the definition, the kernel's coreset output is non-finite exactly
    where the reference run with that backend has it (the fuzz's rule on a GPU), still only in the (batch,
    head) pairs whose inputs hold NaN/inf."""
    pytest.importorskip("triton")
    from comfyui_vorta.vorta.kernels.launch import coreset_op

    g, T, tv, (q, k, v) = _coreset_problem(torch.float32, False)
    heads = torch.tensor([0, 2], dtype=torch.int32, device=DEV)
    qh, kh, vh = (t[:, :, [0, 2]].transpose(1, 2) for t in (q, k, v))
    definition = reference.coreset_attention(qh, kh, vh, g, (2, 3, 2), 0.5, kv_from, T, tv)
    monkeypatch.setattr(reference, "sdpa", _quirky_sdpa)
    quirky = reference.coreset_attention(qh, kh, vh, g, (2, 3, 2), 0.5, kv_from, T, tv)
    out = torch.full_like(q, float("nan"))
    with poisoned_empty():
        coreset_op(q, k, v, heads, out, list(g.shape), [2, 3, 2], 0.5, kv_from == "key", T, tv.to(DEV))
    got = heads_first(out[:, :, [0, 2]])
    assert not torch.equal(torch.isfinite(quirky), torch.isfinite(definition)), "the stand-in changed nothing"
    assert torch.equal(torch.isfinite(got), torch.isfinite(quirky.cpu()))
    both = torch.isfinite(got) & torch.isfinite(definition.cpu())
    assert torch.allclose(got[both], definition.cpu()[both], atol=1e-5)
    assert torch.isfinite(got[0, 1]).all() and torch.isfinite(got[1, 0]).all()  # clean (batch, head) pairs
