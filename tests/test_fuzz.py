"""A small seeded fuzz (CPU interpreter, under a minute on 2 cores): random grids, tiles and windows larger than
the grid, even windows, ratios, head dims 64/128 and an unsupported one, batch 1-3, head subsets, text 0/1/7 with
padding before or after the video, NaN/inf inputs and exact ties; kernels against the reference, the reference
against the brute force.  ``bench/fuzz_device.py`` runs the same cases by the thousand on a GPU."""
import pytest
import torch

pytest.importorskip("triton")

from fuzz_cases import case_summary, make_case, run_case  # noqa: E402

# fixed: the cases below cover every path this test asserts on.  7028 is left out: it took 5.7 s of the
# interpreter's 15.6 s for 7000-7029 (grid 2x2x7, batch 3), and every path it drives (TMA, tail block, row split,
# text) 7008 drives too
SEEDS = [seed for seed in range(7000, 7030) if seed != 7028]
CUDA = torch.cuda.is_available()


def test_fuzz_cases_cover_every_path():
    cases = [make_case(s) for s in SEEDS]
    paths = {p for c in cases for p in c.paths()}
    assert {"sliding TMA", "sliding pointer", "sliding TMA tail block", "sliding row split", "sliding text", "coreset",
            "text first", "non-finite input", "exact ties"} <= paths, paths
    assert any(c.head_dim not in (64, 128) and {1, 2} & set(c.decisions) for c in cases)  # a refusal
    assert {c.text_len for c in cases} == {0, 1, 7} and any(c.text_valid and min(c.text_valid) < c.text_len for c in cases)
    assert {c.batch for c in cases} == {1, 2, 3} and any(1 in c.grid for c in cases)


def test_fuzz():
    failures = []
    for seed in SEEDS:
        case = make_case(seed)
        verdict, detail = run_case(case, "cuda" if CUDA else "cpu",
                                   kernel_tol={torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2} if CUDA else None)
        if verdict not in ("ok", "refused"):
            failures.append(f"{verdict}: {detail}\n    {case_summary(case)}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------ what a case is judged against (issue 12)


def _judged(decisions, got, ref, device_ref=None, fell_back=False, dirty=((0, 0),)):
    """judge() on synthetic (B=2, H, S=4, D=2) outputs; the inputs are finite except one value in each (b, h) of
    ``dirty``."""
    from fuzz_cases import Case, judge

    H = len(decisions)
    case = Case(0, (1, 2, 2), (1, 1, 1), (1, 1, 1), (1, 2, 2), 0.5, 2, H, 2, list(decisions), torch.float32, "hunyuan",
                "query", 0, None, False, None)
    qkv = [torch.zeros(2, H, 4, 2) for _ in range(3)]
    for b, h in dirty:
        qkv[1][b, h, 0, 0] = float("-inf")
    info = {}
    return judge(case, got, ref, qkv, 1e-5, device_ref, fell_back, info), info


def _outputs(H):
    ref = torch.ones(2, H, 4, 2)
    quirk = ref.clone()
    quirk[0, 0, 1] = float("nan")  # where the device's SDPA puts a NaN and the definition does not
    return ref, quirk


@pytest.mark.parametrize("branch", [0, 1])
def test_sdpa_heads_follow_the_device_sdpa(branch):
    """Full heads and coreset heads (pooled attention = the reference's own SDPA call) put NaN/inf where SDPA
    does on their device, even where the definition has none (GPU backends: fp32 -inf scores give NaN)."""
    ref, quirk = _outputs(1)
    (verdict, _), info = _judged([branch], quirk, ref, device_ref=quirk)
    assert verdict == "ok" and info["sdpa_differs"] == 1
    (verdict, detail), _ = _judged([branch], ref, ref, device_ref=quirk)  # the device's SDPA says NaN: it must be
    assert verdict == "nonfinite" and "device SDPA" in detail
    (verdict, _), _ = _judged([branch], quirk, ref)  # on the CPU the definition is the reference
    assert verdict == "nonfinite"


def test_sliding_kernel_heads_follow_the_definition_on_every_device():
    ref, quirk = _outputs(1)
    (verdict, detail), _ = _judged([2], quirk, ref, device_ref=quirk)
    assert verdict == "nonfinite" and "device SDPA" not in detail
    (verdict, _), _ = _judged([2], quirk, ref, device_ref=quirk, fell_back=True)  # the reference ran on the device
    assert verdict == "ok"


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_nonfinite_in_a_clean_batch_element_or_head_is_a_leak(branch):
    """NaN/inf outside every (b, h) whose inputs hold one is a failure whatever the references say."""
    ref, _ = _outputs(2)
    got = ref.clone()
    got[1, 1, 2, 0] = float("nan")  # inputs are non-finite only in (0, 0)
    (verdict, detail), _ = _judged([2, branch], got, got, device_ref=got)
    assert verdict == "leak" and "[[1, 1]]" in detail
    (verdict, _), _ = _judged([2, branch], got, got, device_ref=got, dirty=((0, 0), (1, 1)))
    assert verdict == "ok"


def test_no_kernel_is_reported_when_the_launcher_already_knows_no_config_fits(monkeypatch):
    """GPU seed 596 at the lead's commit: its forced config needed more shared memory than the H100 has, a case
    before it in the same worker had found that out, so the launcher went straight to the reference (on the
    GPU: SDPA, whose fp32 backend turned a -inf score of the text query into NaN) and the fuzz, which only looked
    for a new entry in the launcher's no-fit memory, judged the reference's output as the kernel's."""
    from comfyui_vorta.vorta.kernels import sliding_launch

    import test_kernels

    monkeypatch.setattr(sliding_launch, "_WORKING_CONFIG", {})
    monkeypatch.setattr(sliding_launch, "_NO_CONFIG", {})
    fake = test_kernels._Fails(sliding_launch.sliding_tile_fwd_kernel, {16, 32})
    monkeypatch.setattr(sliding_launch, "sliding_tile_fwd_kernel", fake)
    case = make_case(7010)  # like 596: a sliding head, a text query, a -inf key; a forced 32-row config
    assert case.decisions == [2] and case.sta_config[:2] == (32, 16) and case.text_len, case_summary(case)
    for device_reference in (False, True):  # the second call finds the config in the launcher's memory
        verdict, detail = run_case(case, "cuda" if CUDA else "cpu", device_reference=device_reference)
        assert verdict == "no-kernel", (verdict, detail)
    assert fake.tried == [32]


def test_fuzz_with_the_device_reference():
    """The GPU fuzz's path (the SDPA heads judged against the reference run on the kernels' device), on this
    device, for cases with every branch, NaN/inf inputs and padded text."""
    for seed in (7019, 7030):
        case = make_case(seed)
        info = {}
        verdict, detail = run_case(case, "cuda" if CUDA else "cpu", info=info, device_reference=True,
                                   kernel_tol={torch.float32: 2e-3, torch.float16: 3e-3} if CUDA else None)
        assert verdict == "ok", (verdict, detail, case_summary(case))
        assert CUDA or info["sdpa_differs"] == 0  # on the CPU the device reference is the definition


# GPU cases that failed the H100 fuzz of seeds 0-999 run before 74d208f (torch 2.11, triton 3.6):
# full heads (30, 806) and coreset heads (699, 907) where fp32 SDPA put NaN unlike the definition; 596 (sliding),
# where the reference ran in place of a kernel whose config did not fit; 987 all three branches.  Here they run
# through the interpreter (on a GPU: the kernels, the SDPA heads judged against the reference run there).
@pytest.mark.parametrize("seed", [30, 596, 699, 806, 907, 987])
def test_gpu_seeds_from_the_h100_run(seed):
    case = make_case(seed, gpu=True)
    verdict, detail = run_case(case, "cuda" if CUDA else "cpu",
                               kernel_tol={torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2} if CUDA else None)
    assert verdict == "ok", (verdict, detail, case_summary(case))


def test_a_forced_config_that_does_not_fit_is_retried_with_fewer_stages(monkeypatch):
    """The H100 run listed 46 fp32 head-dim-128 cases as no-kernel: Triton needs more shared memory than the
    estimate make_case fits the stages to.  The fuzz now retries with fewer stages (same load path), so the kernel
    is tested; only when one stage does not fit either is the case no-kernel."""
    from comfyui_vorta.vorta.kernels import sliding_launch

    real = sliding_launch.sliding_tile_fwd_kernel

    class FitsWithOneStage:
        def __init__(self):
            self.stages = []

        def __getitem__(self, grid):
            def run(*args, **kw):
                self.stages.append(kw["num_stages"])
                if kw["num_stages"] > 1:
                    from triton.runtime.errors import OutOfResources
                    raise OutOfResources(458800, 232448, "shared memory")
                return real[grid](*args, **kw)
            return run

    fake = FitsWithOneStage()
    monkeypatch.setattr(sliding_launch, "sliding_tile_fwd_kernel", fake)
    monkeypatch.setattr(sliding_launch, "_WORKING_CONFIG", {})
    monkeypatch.setattr(sliding_launch, "_NO_CONFIG", {})
    case = make_case(143, gpu=True)  # sliding heads, fp32, text, a small grid; forced (128, 64, 8, 3, TMA, ...)
    assert case.sta_config[3] == 3 and 2 in case.decisions, case_summary(case)
    verdict, detail = run_case(case, "cuda" if CUDA else "cpu",
                               kernel_tol={torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2} if CUDA else None)
    assert verdict == "ok", (verdict, detail)
    assert case.sta_config[3] == 1 and fake.stages[:2] == [3, 2] and set(fake.stages[2:]) == {1}, fake.stages
