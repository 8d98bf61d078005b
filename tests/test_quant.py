"""The 8-bit path: its PyTorch quantization reference checked from the spec, the quantizing kernels equal to it, and
both sparse kernels in 8 bits against the exact reference branches (poisoned outputs, ragged grids, text, batch > 1,
non-finite inputs that must stay where dense attention would put them).

On the CPU the kernels run through TRITON_INTERPRET=1, whose float-to-FP8 cast is not round-to-nearest for every
value; there the attention checks use a looser bound.  On a GPU the bound is the SageAttention-style one."""
import pytest
import torch

from comfyui_vorta.vorta import reference
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import TokenGrid
from comfyui_vorta.vorta.quantization import key_mean, quantize_keys, quantize_rows_int8, quantize_values
from comfyui_vorta.vorta.routing import AttentionProblem

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


# ------------------------------------------------------------------ the reference, from the spec
def test_int8_rows_brute_force():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 7, 16, generator=g) * torch.rand(5, 7, 1, generator=g) * 10
    x[1, 2] = 0.0
    x[3, 4, 5] = float("nan")
    x[4, 0, 1] = float("inf")
    vals, scale = quantize_rows_int8(x)
    for i in range(5):
        for j in range(7):
            row = x[i, j]
            if not torch.isfinite(row).all():
                assert torch.isnan(scale[i, j])  # a non-finite row shows up, its finite values still quantized
                continue
            amax = float(row.abs().max())
            assert float(scale[i, j]) == pytest.approx(amax / 127, rel=1e-6)
            if amax == 0:
                assert (vals[i, j] == 0).all()
                continue
            for d in range(16):  # nearest level, ties away from zero
                t = float(row[d]) * 127 / amax
                want = int(abs(t) + 0.5) * (1 if t >= 0 else -1)
                assert int(vals[i, j, d]) == want
    assert vals.dtype == torch.int8 and int(vals.abs().max()) <= 127


def test_key_smoothing_leaves_attention_unchanged_and_ignores_nonfinite():
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(2, 30, 8, generator=g, dtype=torch.float64) for _ in range(3))
    k = k + 5.0  # a shared bias: what smoothing removes
    m = key_mean(k)
    a = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    b = torch.softmax(q @ (k - m[:, None, :]).transpose(-1, -2), -1) @ v
    assert torch.allclose(a, b, atol=1e-10)
    k2 = k.clone()
    k2[0, 3, 1] = float("nan")
    m2 = key_mean(k2)
    assert torch.isfinite(m2).all()
    assert float(m2[0, 1]) == pytest.approx(float(torch.cat([k[0, :3, 1], k[0, 4:, 1]]).mean()))
    assert torch.equal(m2[1], m[1])


def test_values_fp8_per_channel_and_dead_rows():
    g = torch.Generator().manual_seed(13)
    v = torch.randn(3, 20, 8, generator=g) * torch.linspace(0.1, 50, 8)
    live = torch.ones(3, 20, dtype=torch.bool)
    live[2, 15:] = False
    v[2, 17] = float("inf")  # in a dead row: ignored everywhere
    v[1, 4, 2] = float("inf")
    v8, s = quantize_values(v, live)
    assert s.shape == (3, 8) and torch.isfinite(s).all()
    ref = torch.where(torch.isfinite(v), v.abs(), 0)
    ref[2, 15:] = 0
    assert torch.allclose(s, ref.amax(1) / 448)
    assert torch.isnan(v8[1, 4, 2].float())  # an inf is NaN in FP8 (never saturated to 448)
    assert (v8[2, 15:].float() == 0).all()
    err = (v8.float() * s[:, None, :] - v)[torch.isfinite(v) & live[..., None]].abs()
    assert float((err / v[torch.isfinite(v) & live[..., None]].abs().clamp(min=1e-3)).max()) <= 2 ** -4 + 1e-6


# ------------------------------------------------------------------ the kernels
triton = pytest.importorskip("triton")
if CUDA and torch.cuda.get_device_capability() < (8, 9):
    pytest.skip("the 8-bit kernels need compute capability 8.9+", allow_module_level=True)

from comfyui_vorta.vorta.kernels.launch import triton_coreset, triton_sliding  # noqa: E402
from comfyui_vorta.vorta.kernels.quantize_launch import quantize_kv  # noqa: E402


def test_quantize_kernel_equals_reference():
    B, H, D, L, T = 2, 3, 32, 40, 6
    g = torch.Generator().manual_seed(21)
    k = (torch.randn(B, L + T, H, D, generator=g) + 3).to(DEV)
    v = (torch.randn(B, L + T, H, D, generator=g) * 4).to(DEV)
    k[1, 7, 2, 3] = float("nan")
    v[0, 11, 1, 5] = float("inf")
    heads = torch.tensor([2, 0, 1], dtype=torch.int32, device=DEV)
    perm = torch.randperm(L, generator=g).to(DEV, torch.int32)
    tv = torch.tensor([6, 2], dtype=torch.int32, device=DEV)
    kv = quantize_kv(k, v, heads, perm, tv, True, L, T, 0, L)
    rows = torch.cat([perm.long(), torch.arange(L, L + T, device=DEV)])
    live = torch.arange(L + T, device=DEV)[None, :] < (L + tv)[:, None]  # [B, n]
    ks = k[:, rows][:, :, heads.long()].transpose(1, 2)  # [B, h, n, D] in tile order
    vs = v[:, rows][:, :, heads.long()].transpose(1, 2)
    k8, sk = quantize_keys(ks, live[:, None].expand(B, 3, -1))
    v8, sv = quantize_values(vs, live[:, None].expand(B, 3, -1))
    n = L + T
    assert torch.equal(kv.k.view(B, 3, n, D), k8)
    assert torch.allclose(kv.k_scale.view(B, 3, n), sk, rtol=1e-6, equal_nan=True)
    assert torch.allclose(kv.v_scale.view(B, 3, D), sv, rtol=1e-6)
    got_v = kv.v.view(B, 3, D, kv.pitch)[..., :n].transpose(-1, -2).float()
    same = (got_v == v8.float()) | (torch.isnan(got_v) & torch.isnan(v8.float()))
    # the interpreter's FP8 cast rounds a few values differently; a GPU's cast is the same as torch's
    assert float(same.float().mean()) >= (1.0 if CUDA else 0.95)
    assert torch.isnan(kv.k_scale.view(B, 3, n)[1, 0, (rows == 7).nonzero()[0, 0]])  # head 2 is index 0


CASES = [
    # grid, tile, window, heads, routed, text (T, valid), batch
    ((3, 4, 5), (2, 3, 2), (3, 3, 3), 4, [1, 2, 3], (0, None), 2),   # ragged on every axis
    ((3, 5, 6), (2, 3, 4), (3, 3, 3), 2, [0, 1], (5, [5, 3]), 2),   # text with padding
]


def _problem(case, kv_from):
    grid, tile, window, H, routed, (T, valid), B = case
    tv = None if valid is None else torch.tensor(valid)
    return AttentionProblem(TokenGrid(*grid), VortaConfig(tile=tile, window=window, bucket=(2, 3, 2)),
                            kv_from=kv_from, text_len=T, text_valid=tv)


@pytest.mark.parametrize("case", CASES, ids=["ragged", "text"])
@pytest.mark.parametrize("branch", ["sliding", "coreset"])
def test_8bit_branches_match_reference(branch, case):
    grid, tile, window, H, routed, (T, valid), B = case
    D, S = 32, TokenGrid(*grid).numel + T
    g = torch.Generator().manual_seed(31 if branch == "sliding" else 32)
    dtype = torch.bfloat16 if CUDA else torch.float16
    q, k, v = (torch.randn(B, S, H, D, generator=g).to(DEV, dtype) for _ in range(3))
    k = k + 2.0  # a key bias, as in DiTs
    p = _problem(case, "key" if T else "query")
    heads = torch.tensor(routed, device=DEV)
    out = torch.full_like(q, float("nan"))
    (triton_sliding if branch == "sliding" else triton_coreset)(q, k, v, heads, out, p, quant=True)
    qh, kh, vh = (x.float().transpose(1, 2)[:, routed] for x in (q, k, v))
    fn = reference.sliding_tile_attention if branch == "sliding" else reference.coreset_attention
    args = (tile, window) if branch == "sliding" else ((2, 3, 2), p.config.ratio, p.kv_from)
    want = fn(qh, kh, vh, p.grid, *args, T, p.text_valid).transpose(1, 2)
    got = out[:, :, routed].float()
    if valid is not None:
        live = torch.arange(S)[None, :] < (p.grid.numel + torch.tensor(valid))[:, None]
        assert (got[~live.to(DEV)] == 0).all()  # padded text rows
        got, want = got[live.to(DEV)], want[live.to(DEV)]
    assert torch.isfinite(got).all()
    rel = float((got - want).norm() / want.norm())
    assert rel < (0.05 if CUDA else 0.12), rel
    others = [h for h in range(H) if h not in routed]
    assert torch.isnan(out[:, :, others]).all()  # untouched heads keep their poison


def test_8bit_sliding_nonfinite_stays_local():
    """A NaN key of one (batch, head) reaches only the queries whose window holds it, like dense attention."""
    grid, tile, window = (3, 4, 5), (1, 2, 2), (1, 1, 1)
    B, H, D = 2, 2, 32
    g = torch.Generator().manual_seed(41)
    S = TokenGrid(*grid).numel
    dtype = torch.bfloat16 if CUDA else torch.float16
    q, k, v = (torch.randn(B, S, H, D, generator=g).to(DEV, dtype) for _ in range(3))
    p = AttentionProblem(TokenGrid(*grid), VortaConfig(tile=tile, window=window), text_len=0)
    heads = torch.arange(H, device=DEV)
    clean = torch.full_like(q, float("nan"))
    triton_sliding(q, k, v, heads, clean, p, quant=True)
    k[1, 0, 0] = float("nan")  # token 0 = tile (0, 0, 0): its window (1x1x1 tiles) is its own tile
    v[1, 5, 0] = float("inf")  # token 5 = frame 0, row 1, col 0: tile (0, 0, 0) too
    out = torch.full_like(q, float("nan"))
    triton_sliding(q, k, v, heads, out, p, quant=True)
    own_tile = torch.zeros(S, dtype=torch.bool)
    own_tile[[0, 1, 5, 6]] = True  # frame 0, rows 0-1, cols 0-1
    assert torch.equal(out[0], clean[0]) and torch.equal(out[1, :, 1], clean[1, :, 1])  # other batch, other head
    rest_got, rest_clean = out[1, ~own_tile.to(DEV), 0].float(), clean[1, ~own_tile.to(DEV), 0].float()
    assert torch.isfinite(rest_got).all()  # other tiles: the statistics left the bad token out
    assert float((rest_got - rest_clean).norm() / rest_clean.norm()) < 0.05
    assert torch.isnan(out[1, own_tile.to(DEV), 0]).all()
