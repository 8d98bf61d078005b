"""Triton kernels against the reference branches: poisoned outputs, fresh random inputs, ragged grids,
head subsets, batch > 1, text tokens.  On the CPU they run through TRITON_INTERPRET=1 in fp32/fp16 at
small sizes; on a GPU also in bf16."""
import pytest
import torch

triton = pytest.importorskip("triton")

from comfyui_vorta.vorta.kernels.launch import triton_coreset, triton_sliding  # noqa: E402
from comfyui_vorta.vorta import reference  # noqa: E402
from comfyui_vorta.vorta.config import VortaConfig  # noqa: E402
from comfyui_vorta.vorta.geometry import TokenGrid  # noqa: E402
from comfyui_vorta.vorta.routing import AttentionProblem, as_bshd  # noqa: E402

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
TOL = {torch.float32: 2e-3 if CUDA else 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def make(B, H, S, D, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(B, H, S, D, generator=g) for _ in range(3)]
    if layout == "wan":
        xs = [x.transpose(1, 2).reshape(B, S, H * D) for x in xs]
    return [x.to(DEV, dtype) for x in xs]


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


CASES = [
    # grid, tile, window, heads(total), routed heads, text (T, valid), layout, batch
    ((4, 6, 8), (2, 3, 4), (3, 3, 3), 3, [0, 2], (0, None), "wan", 2),
    # ragged along every axis (2 x 2 x 3 tiles, partial last ones); a window row of 36 keys: a whole 32-key block
    # plus a tail in every launch config below
    ((3, 4, 5), (2, 3, 2), (3, 3, 3), 4, [1, 2, 3], (0, None), "wan", 1),
    ((8, 4, 8), (2, 2, 2), (3, 1, 3), 2, [1], (0, None), "wan", 2),           # larger tile grid than window
    ((3, 5, 6), (2, 3, 4), (3, 3, 3), 3, [0, 1, 2], (5, None), "hunyuan", 2),  # text, all valid
    ((4, 4, 6), (2, 2, 3), (3, 3, 3), 2, [1], (6, [6, 2]), "hunyuan", 2),     # padded text
]
SEEDS = [101, 102, 103, 104, 105]  # one fixed seed per case (never hash(): str hashes change per process)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_seed", list(zip(CASES, SEEDS)), ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("branch", ["sliding", "coreset"])
def test_kernel_matches_reference(branch, case_seed, dtype):
    case, seed = case_seed
    grid, tile, window, H, routed, (T, valid), layout, B = case
    g = TokenGrid(*grid)
    D = 32
    S = g.numel + T
    q, k, v = make(B, H, S, D, dtype, layout, seed=seed + (1000 if branch == "coreset" else 0))
    tv = None if valid is None else torch.tensor(valid)
    p = AttentionProblem(g, VortaConfig(tile=tile, window=window, bucket=(2, 3, 2)),
                         kv_from="key" if layout == "hunyuan" else "query", text_len=T, text_valid=tv)
    qs, ks, vs = (as_bshd(x, layout, H) for x in (q, k, v))
    out = torch.full((B, S, H, D), float("nan"), dtype=dtype, device=DEV)  # poison
    heads = torch.tensor(routed, device=DEV)
    (triton_sliding if branch == "sliding" else triton_coreset)(qs, ks, vs, heads, out, p)
    qh, kh, vh = (x.transpose(1, 2)[:, routed].float().cpu() for x in (qs, ks, vs))
    if branch == "sliding":
        ref = reference.sliding_tile_attention(qh, kh, vh, g, tile, window, T, tv)
    else:
        ref = reference.coreset_attention(qh, kh, vh, g, (2, 3, 2), 0.5, p.kv_from, T, tv)
    got = out[:, :, routed].transpose(1, 2).float().cpu()
    assert torch.isfinite(got).all(), "some routed output was not written"
    err = rel(got, ref)
    assert err < TOL[dtype], f"relative error {err:.2e} on {branch} {case} {dtype}"
    others = [h for h in range(H) if h not in routed]
    assert torch.isnan(out[:, :, others]).all(), "a head that was not routed here was written"


# BLOCK_M, BLOCK_N, warps, stages, TMA, tail block, row split
STA_CONFIGS = ["32,32,4,1,1", "32,32,4,1,0", "32,32,4,1,1,16", "32,32,4,1,0,16,0"] + (
    ["128,64,8,3,1", "64,64,4,3,1", "128,64,8,3,0", "128,128,8,3,1,64", "128,128,8,3,1,16,1", "64,128,4,3,1,32"]
    if CUDA else [])
# tile of 48 tokens: a 32-row block plus a 16-row block (row split); ragged along F, H and W; padded text
ROW_SPLIT_CASE = ((3, 4, 9), (2, 3, 8), (3, 3, 3), 3, [0, 2], (5, [5, 3]), "hunyuan", 2)


@pytest.mark.parametrize("config", STA_CONFIGS)
@pytest.mark.parametrize("case", [CASES[1], CASES[4], ROW_SPLIT_CASE], ids=["ragged", "padded-text", "row-split"])
def test_sliding_launch_configs(case, config, monkeypatch):
    """Every load path of the sliding kernel (TMA descriptors or pointers; block sizes that cross segment and
    head boundaries; segment tails in smaller blocks; a tile's last rows in a second launch) against the
    reference, text-query splits included."""
    monkeypatch.setenv("VORTA_STA_CONFIG", config)
    grid, tile, window, H, routed, (T, valid), layout, B = case
    g = TokenGrid(*grid)
    D, dtype = 32, torch.float16
    S = g.numel + T
    q, k, v = make(B, H, S, D, dtype, layout, seed=11)
    tv = None if valid is None else torch.tensor(valid)
    p = AttentionProblem(g, VortaConfig(tile=tile, window=window), kv_from="key", text_len=T, text_valid=tv)
    qs, ks, vs = (as_bshd(x, layout, H) for x in (q, k, v))
    out = torch.full((B, S, H, D), float("nan"), dtype=dtype, device=DEV)
    triton_sliding(qs, ks, vs, torch.tensor(routed, device=DEV), out, p)
    qh, kh, vh = (x.transpose(1, 2)[:, routed].float().cpu() for x in (qs, ks, vs))
    ref = reference.sliding_tile_attention(qh, kh, vh, g, tile, window, T, tv)
    err = rel(out[:, :, routed].transpose(1, 2).float().cpu(), ref)
    assert err < TOL[dtype], f"relative error {err:.2e} with config {config}"


@pytest.mark.parametrize("on_scores", [True, False], ids=["scale-on-scores", "scale-in-q"])
@pytest.mark.parametrize("case", [CASES[4], ROW_SPLIT_CASE], ids=["padded-text", "row-split"])
def test_sliding_scale_placement(case, on_scores, monkeypatch):
    """Both places of the softmax scale (the launcher picks by block size) give the reference's output; forced here
    on the small blocks the interpreter runs."""
    import comfyui_vorta.vorta.kernels.sliding_launch as launch

    assert launch.scale_scores(128, False) and not launch.scale_scores(64, False) and not launch.scale_scores(128, True)
    monkeypatch.setattr(launch, "scale_scores", lambda block_m, quant: on_scores and not quant)
    monkeypatch.setenv("VORTA_STA_CONFIG", "32,32,4,1,0,16")
    grid, tile, window, H, routed, (T, valid), layout, B = case
    g = TokenGrid(*grid)
    q, k, v = make(B, H, g.numel + T, 32, torch.float16, layout, seed=12)
    tv = None if valid is None else torch.tensor(valid)
    p = AttentionProblem(g, VortaConfig(tile=tile, window=window), kv_from="key", text_len=T, text_valid=tv)
    qs, ks, vs = (as_bshd(x, layout, H) for x in (q, k, v))
    out = torch.full(qs.shape, float("nan"), dtype=torch.float16, device=DEV)
    triton_sliding(qs, ks, vs, torch.tensor(routed, device=DEV), out, p)
    qh, kh, vh = (x.transpose(1, 2)[:, routed].float().cpu() for x in (qs, ks, vs))
    ref = reference.sliding_tile_attention(qh, kh, vh, g, tile, window, T, tv)
    err = rel(out[:, :, routed].transpose(1, 2).float().cpu(), ref)
    assert err < TOL[torch.float16], f"relative error {err:.2e}, scale on scores: {on_scores}"


class _Fails:
    """Stands in for the sliding kernel: raises Triton's OutOfResources for the configs in ``fail``
    (as a GPU with little shared memory would), launches the real kernel otherwise."""

    def __init__(self, real, fail):
        self.real, self.fail, self.tried = real, fail, []

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.tried.append(kw["BLOCK_M"])
            if kw["BLOCK_M"] in self.fail:
                from triton.runtime.errors import OutOfResources
                raise OutOfResources(232448, 101376, "shared memory")
            return self.real[grid](*args, **kw)

        return launch


@pytest.mark.parametrize("fail", [{32}, {32, 16}], ids=["smaller-config", "reference"])
def test_sliding_out_of_resources_falls_back(fail, monkeypatch, caplog):
    """No shared memory for a config: the next smaller one runs; for none, the reference runs, with one warning."""
    from comfyui_vorta.vorta.kernels import sliding_launch as launch

    monkeypatch.delenv("VORTA_STA_CONFIG", raising=False)
    configs = [launch.LaunchConfig(32, 32, 4, 1, False), launch.LaunchConfig(16, 16, 4, 1, False)]
    monkeypatch.setattr(launch, "sliding_configs", lambda *a, **kw: configs)  # the same list on any device
    monkeypatch.setattr(launch, "_WORKING_CONFIG", {})
    monkeypatch.setattr(launch, "_NO_CONFIG", {})
    fake = _Fails(launch.sliding_tile_fwd_kernel, fail)
    monkeypatch.setattr(launch, "sliding_tile_fwd_kernel", fake)
    # a 24-token tile: one block of 32 rows (no row split), so each config launches its own BLOCK_M; two tiles
    grid, tile, window, H, routed = (2, 3, 8), (2, 3, 4), (3, 3, 3), 2, [1]
    (T, valid), layout, B = (6, [6, 2]), "hunyuan", 2
    g = TokenGrid(*grid)
    D, dtype, S = 32, torch.float32, g.numel + T
    q, k, v = make(B, H, S, D, dtype, layout, seed=5)
    tv = torch.tensor(valid)
    p = AttentionProblem(g, VortaConfig(tile=tile, window=window), kv_from="key", text_len=T, text_valid=tv)
    qs, ks, vs = (as_bshd(x, layout, H) for x in (q, k, v))
    ref = reference.sliding_tile_attention(*(x.transpose(1, 2)[:, routed].float().cpu() for x in (qs, ks, vs)),
                                           g, tile, window, T, tv)
    for _ in range(2):  # the second call starts from the config that worked
        out = torch.full((B, S, H, D), float("nan"), dtype=dtype, device=DEV)
        with caplog.at_level("WARNING", logger="vorta"):
            launch.triton_sliding(qs, ks, vs, torch.tensor(routed, device=DEV), out, p)
        assert rel(out[:, :, routed].transpose(1, 2).float().cpu(), ref) < TOL[dtype]
    if fail == {32}:
        assert fake.tried[0] == 32 and set(fake.tried[1:]) == {16}, fake.tried
        assert "PyTorch reference" not in caplog.text
    else:
        assert "no launch config of the sliding tile kernel fits this GPU" in caplog.text
        assert fake.tried == [32, 16], "the second call must not retry configs known not to fit"


def test_no_fit_memory_is_per_head_dim(monkeypatch):
    """A config list that does not fit for one head dim may fit for a smaller one: the launcher's memory of
    configs that did not fit is per (device, dtype, head dim, configs); it used to leave the head dim out, so
    after a head dim that did not fit, every other head dim ran the reference too."""
    from comfyui_vorta.vorta.kernels import sliding_launch as launch

    monkeypatch.delenv("VORTA_STA_CONFIG", raising=False)
    configs = [launch.LaunchConfig(32, 32, 4, 1, False)]
    monkeypatch.setattr(launch, "sliding_configs", lambda *a, **kw: configs)
    monkeypatch.setattr(launch, "_WORKING_CONFIG", {})
    monkeypatch.setattr(launch, "_NO_CONFIG", {})
    real = launch.sliding_tile_fwd_kernel

    class TooBigFor32:
        def __getitem__(self, grid):
            def run(*args, **kw):
                if kw["HEAD_DIM"] == 32:
                    from triton.runtime.errors import OutOfResources
                    raise OutOfResources(232448, 101376, "shared memory")
                return real[grid](*args, **kw)
            return run

    monkeypatch.setattr(launch, "sliding_tile_fwd_kernel", TooBigFor32())
    fell_back, fallback = [], launch.reference_sliding
    monkeypatch.setattr(launch, "reference_sliding", lambda *a: fell_back.append(1) or fallback(*a))
    g, tile, window = TokenGrid(2, 3, 4), (1, 3, 4), (3, 3, 3)
    p = AttentionProblem(g, VortaConfig(tile=tile, window=window))
    for D, expect_fallback in ((32, True), (16, False), (32, True)):
        q, k, v = (as_bshd(x, "hunyuan", 1) for x in make(1, 1, g.numel, D, torch.float32, "hunyuan", seed=D))
        out = torch.full(q.shape, float("nan"), device=DEV)
        n = len(fell_back)
        launch.triton_sliding(q, k, v, torch.tensor([0], device=DEV), out, p)
        assert (len(fell_back) > n) == expect_fallback, D
        ref = reference.sliding_tile_attention(*(x.transpose(1, 2).cpu() for x in (q, k, v)), g, tile, window)
        assert rel(out.transpose(1, 2).cpu(), ref) < TOL[torch.float32]
