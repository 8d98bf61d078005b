"""A small seeded fuzz (CPU interpreter, under a minute on 2 cores): random grids, tiles and windows larger than
the grid, even windows, ratios, head dims 64/128 and an unsupported one, batch 1-3, head subsets, text 0/1/7 with
padding before or after the video, NaN/inf inputs and exact ties; kernels against the reference, the reference
against the brute force.  ``bench/fuzz_device.py`` runs the same cases by the thousand on a GPU."""
import pytest
import torch

pytest.importorskip("triton")

from fuzz_cases import case_summary, make_case, run_case  # noqa: E402

SEEDS = range(7000, 7030)  # fixed: the cases below cover every path this test asserts on
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
