"""The sliding kernel's launch-config autotuner (vorta/kernels/autotune.py): on the CPU the kernels run in the
Triton interpreter, where the tuner is normally off, so these tests turn it on and inject a fake timer
(``autotune._time_config``) that launches the candidate once and returns a fixed time."""
import json

import pytest
import torch

pytest.importorskip("triton")

from comfyui_vorta.vorta import reference  # noqa: E402
from comfyui_vorta.vorta.config import VortaConfig  # noqa: E402
from comfyui_vorta.vorta.geometry import TokenGrid  # noqa: E402
from comfyui_vorta.vorta.kernels import autotune  # noqa: E402
from comfyui_vorta.vorta.kernels import sliding_launch as launch  # noqa: E402
from comfyui_vorta.vorta.kernels.sliding_launch import LaunchConfig  # noqa: E402
from comfyui_vorta.vorta.routing import AttentionProblem, as_bshd  # noqa: E402

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
C = [LaunchConfig(32, 32, 4, 1, False), LaunchConfig(16, 16, 4, 1, False), LaunchConfig(32, 16, 4, 1, False),
     LaunchConfig(16, 32, 4, 1, False, 16)]
RULE_LIST = launch.sliding_configs
GRID, TILE, WINDOW = (2, 3, 8), (2, 3, 4), (3, 3, 3)  # 24-token tiles (no row split at BLOCK_M 16 or 32), 1 x 1 x 2


class Spy:
    """The sliding kernel, recording (BLOCK_M, BLOCK_N) of each launch; raises for the configs in ``fail``."""

    def __init__(self, real, fail=(), error=None):
        self.real, self.fail, self.error, self.launched = real, set(fail), error, []

    def __getitem__(self, grid):
        def run(*args, **kw):
            bm_bn = (kw["BLOCK_M"], kw["BLOCK_N"])
            self.launched.append(bm_bn)
            if bm_bn in self.fail:
                if self.error is not None:
                    raise self.error
                from triton.runtime.errors import OutOfResources
                raise OutOfResources(232448, 101376, "shared memory")
            return self.real[grid](*args, **kw)

        return run


@pytest.fixture
def tuner(monkeypatch, tmp_path):
    """The tuner on (as on a GPU), fresh memories, the candidates ``C`` (rule's pick first), a fake timer."""
    monkeypatch.setenv("VORTA_AUTOTUNE", "1")
    monkeypatch.delenv("VORTA_STA_CONFIG", raising=False)
    monkeypatch.setenv("VORTA_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    monkeypatch.setattr(autotune, "INTERPRET", False)
    monkeypatch.setattr(autotune, "DEVICE_TYPES", ("cuda", "cpu"))
    for name, fresh in (("_TUNED", {}), ("_UNTUNABLE", set()), ("_FILE_CACHE", {})):
        monkeypatch.setattr(autotune, name, fresh)
    monkeypatch.setattr(launch, "_WORKING_CONFIG", {})
    monkeypatch.setattr(launch, "_NO_CONFIG", {})
    monkeypatch.setattr(launch, "sliding_configs", lambda *a, **kw: [C[0], C[1]])
    monkeypatch.setattr(launch, "tune_candidates", lambda *a, **kw: list(C))
    times = {C[0]: 5.0, C[1]: 3.0, C[2]: 1.0, C[3]: 4.0}
    timed = []

    def fake_time(run, config):
        timed.append(config)
        run()
        return times[config]

    monkeypatch.setattr(autotune, "_time_config", fake_time)
    return dict(times=times, timed=timed, path=tmp_path / "autotune.json")


def problem_and_inputs(seed=3, text=0):
    g = TokenGrid(*GRID)
    B, H, D = 2, 2, 16
    S = g.numel + text
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, S, D, generator=gen).to(DEV) for _ in range(3))
    tv = torch.tensor([text, max(0, text - 2)]) if text else None
    p = AttentionProblem(g, VortaConfig(tile=TILE, window=WINDOW), kv_from="key", text_len=text, text_valid=tv)
    return p, tuple(as_bshd(x, "hunyuan", H) for x in (q, k, v))


def run_and_check(p, qkv, routed=(1,)):
    """The op on NaN-poisoned output, against vorta.reference."""
    q, k, v = qkv
    out = torch.full(q.shape, float("nan"), device=DEV)
    launch.triton_sliding(q, k, v, torch.tensor(list(routed), device=DEV), out, p)
    got = out[:, :, list(routed)].transpose(1, 2).cpu()
    ref = reference.sliding_tile_attention(*(x.transpose(1, 2)[:, list(routed)].cpu() for x in qkv), p.grid,
                                           TILE, WINDOW, p.text_len, p.text_valid)
    assert torch.isfinite(got).all(), "a routed row was not written"
    assert float((got - ref).norm() / ref.norm()) < (2e-3 if CUDA else 1e-5)


def test_fastest_candidate_chosen_cached_and_used(tuner, monkeypatch, caplog):
    spy = Spy(launch.sliding_tile_fwd_kernel)
    monkeypatch.setattr(launch, "sliding_tile_fwd_kernel", spy)
    p, qkv = problem_and_inputs(text=4)
    with caplog.at_level("WARNING", logger="vorta"):
        run_and_check(p, qkv)
    assert tuner["timed"] == C, "every candidate timed once, the rule's pick first"
    (key, t), = autotune.chosen().items()
    assert t.config == C[2] and t.ms == 1.0 and t.rule == C[0] and t.rule_ms == 5.0 and t.source == "measured"
    assert spy.launched[-1] == (32, 16), "the chosen config runs last (its result is the output)"
    assert "chose (32,16,4,1) 1.000 ms vs the rule's (32,32,4,1) 5.000 ms (4 candidates, 0 skipped)" in caplog.text
    # the next call of the key: no timing, the chosen config only; also while a CUDA graph is captured
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    spy.launched.clear()
    run_and_check(p, qkv)
    assert len(tuner["timed"]) == len(C) and set(spy.launched) == {(32, 16)}
    # a different routed head count in the same power-of-two bucket of batch x heads: the same choice
    run_and_check(p, qkv, routed=(0,))
    assert len(autotune.chosen()) == 1
    # the file holds the choice, keyed by device name, Triton version and the problem
    entries = json.loads(tuner["path"].read_text())["entries"]
    (fkey, entry), = entries.items()
    assert entry["config"] == list(C[2]) and entry["rule"] == list(C[0]) and "|grid" not in fkey


def test_failing_candidates_are_skipped(tuner, monkeypatch, caplog):
    """A candidate that runs out of shared memory (or fails to compile) is skipped; the next fastest wins."""
    spy = Spy(launch.sliding_tile_fwd_kernel, fail={(32, 16)})
    monkeypatch.setattr(launch, "sliding_tile_fwd_kernel", spy)
    p, qkv = problem_and_inputs()
    with caplog.at_level("WARNING", logger="vorta"):
        run_and_check(p, qkv)
    assert next(iter(autotune.chosen().values())).config == C[1]
    assert "(4 candidates, 1 skipped)" in caplog.text
    assert spy.launched[-1] == (16, 16)


def test_compile_error_skipped_and_none_running_falls_back(tuner, monkeypatch):
    """Every candidate fails to compile: nothing is chosen (and not retried), the rule's list decides."""
    from triton.compiler.errors import CompilationError

    err = CompilationError("src", None, "unsupported")
    monkeypatch.setattr(launch, "tune_candidates", lambda *a, **kw: [C[2], C[3]])
    spy = Spy(launch.sliding_tile_fwd_kernel, fail={(32, 16), (16, 32)}, error=err)
    monkeypatch.setattr(launch, "sliding_tile_fwd_kernel", spy)
    p, qkv = problem_and_inputs()
    run_and_check(p, qkv)
    run_and_check(p, qkv)
    assert autotune.chosen() == {} and len(autotune._UNTUNABLE) == 1 and len(tuner["timed"]) == 2
    assert spy.launched[-1] == (32, 32), "the rule's list ran"


@pytest.mark.parametrize("why", ["forced", "off", "capture", "interpreter", "compiling"])
def test_no_tuning_when_blocked(tuner, monkeypatch, why):
    if why == "forced":
        monkeypatch.setenv("VORTA_STA_CONFIG", "16,16,4,1,0")
        monkeypatch.setattr(launch, "sliding_configs", RULE_LIST)  # which reads the variable
    elif why == "off":
        monkeypatch.setenv("VORTA_AUTOTUNE", "0")
    elif why == "capture":
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    elif why == "interpreter":
        monkeypatch.setattr(autotune, "INTERPRET", True)
    else:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    spy = Spy(launch.sliding_tile_fwd_kernel)
    monkeypatch.setattr(launch, "sliding_tile_fwd_kernel", spy)
    p, qkv = problem_and_inputs()
    run_and_check(p, qkv)
    assert tuner["timed"] == [] and autotune.chosen() == {}
    assert set(spy.launched) == ({(16, 16)} if why == "forced" else {(32, 32)})
    assert not tuner["path"].exists()


def test_choice_read_from_file(tuner, monkeypatch):
    """A later process reads the choice from the file (no timing, also while capturing); a corrupt file or an entry
    naming a config that is no longer a candidate is measured again."""
    p, qkv = problem_and_inputs()
    run_and_check(p, qkv)
    assert len(tuner["timed"]) == len(C)
    monkeypatch.setattr(autotune, "_TUNED", {})
    monkeypatch.setattr(autotune, "_FILE_CACHE", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    spy = Spy(launch.sliding_tile_fwd_kernel)
    monkeypatch.setattr(launch, "sliding_tile_fwd_kernel", spy)
    run_and_check(p, qkv)
    assert len(tuner["timed"]) == len(C) and set(spy.launched) == {(32, 16)}
    assert next(iter(autotune.chosen().values())).source == "file"
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    for text in ("{not json", json.dumps(dict(version=1, entries={k: dict(config=[8, 8, 1, 1, False, 0, True])
                                                                    for k in json.loads(
                                                                        tuner["path"].read_text())["entries"]}))):
        tuner["path"].write_text(text)
        monkeypatch.setattr(autotune, "_TUNED", {})
        monkeypatch.setattr(autotune, "_FILE_CACHE", {})
        n = len(tuner["timed"])
        run_and_check(p, qkv)
        assert len(tuner["timed"]) == n + len(C)
        assert json.loads(tuner["path"].read_text())["entries"].popitem()[1]["config"] == list(C[2])


def test_rule_kept_within_margin(tuner, monkeypatch):
    """Noise never moves the choice: a candidate must beat the rule's pick by MARGIN."""
    times = {C[0]: 1.0, C[1]: 1.0 - autotune.MARGIN / 2, C[2]: 1.2}
    monkeypatch.setattr(autotune, "_time_config", lambda run, c: times[c])
    assert autotune.choose(("k",), lambda: list(times), C[0], lambda c: None, DEV, "test") == C[0]
    times[C[1]] = 1.0 - 2 * autotune.MARGIN
    assert autotune.choose(("k2",), lambda: list(times), C[0], lambda c: None, DEV, "test") == C[1]


def test_tune_candidates():
    """At most 8, the rule's pick first (where it fits), no two that launch the same kernels, within the shared memory given."""
    for tile, tma, limit in ((192, True, None), (360, True, 232448), (432, True, 232448), (192, False, 101376),
                             (360, False, 101376), (432, True, 101376)):
        segment = 3 * tile
        cands = launch.tune_candidates(tile, 128, None, segment, 2, smem_limit=limit, tma=tma)
        rule = launch._rule_config(tile, segment, tma)
        fits = limit is None or launch._smem_need(rule, 128, 2) <= limit  # RTX 50: TMA, ~100 KB: it does not
        assert (cands[0] == rule) == fits and 2 <= len(cands) <= launch.MAX_CANDIDATES  # consumer cards: 2 fit
        assert len({launch._launches_as(c, tile) for c in cands}) == len(cands)
        assert limit is None or all(launch._smem_need(c, 128, 2) <= limit for c in cands)
        assert all(c.tma == tma for c in cands)
    # the sweep's winner on a 192-token tile (bench/results) is among the candidates
    assert LaunchConfig(128, 64, 8, 4, True) in launch.tune_candidates(192, 128, None, 576, 2, tma=True)


@pytest.mark.skipif(not CUDA, reason="times real launches with CUDA events")
def test_real_timer_on_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("VORTA_AUTOTUNE", "1")
    monkeypatch.delenv("VORTA_STA_CONFIG", raising=False)
    monkeypatch.setenv("VORTA_AUTOTUNE_CACHE", str(tmp_path / "a.json"))
    for name, fresh in (("_TUNED", {}), ("_UNTUNABLE", set()), ("_FILE_CACHE", {})):
        monkeypatch.setattr(autotune, name, fresh)
    monkeypatch.setattr(launch, "_WORKING_CONFIG", {})
    p, qkv = problem_and_inputs(text=4)
    run_and_check(p, qkv)
    (t,) = autotune.chosen().values()
    assert t.source == "measured" and t.ms is not None and t.ms > 0 and t.tried >= 1


def test_compiled_graph_tunes_at_run_time_not_while_tracing(tuner):
    """torch.compile traces the custom op through its fake implementation; the compiled graph calls the op eagerly,
    and that first real call measures (once)."""
    p, (q, k, v) = problem_and_inputs()
    heads = torch.tensor([1], dtype=torch.int32, device=DEV)

    def f(q, k, v):
        out = torch.full(q.shape, float("nan"), device=DEV)
        launch.sliding_tile_op(q, k, v, heads, out, list(GRID), list(TILE), list(WINDOW), 0, None)
        return out

    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    assert tuner["timed"] == C and next(iter(autotune.chosen().values())).config == C[2]
    ref = reference.sliding_tile_attention(*(x.transpose(1, 2)[:, 1:].cpu() for x in (q, k, v)), p.grid, TILE,
                                           WINDOW)
    assert float((out[:, :, 1].cpu() - ref[:, 0]).norm() / ref.norm()) < (2e-3 if CUDA else 1e-5)


def test_default_skips_tuning_where_the_rule_was_measured_best(monkeypatch):
    """Unset VORTA_AUTOTUNE: no tuning on an H100 (the rule won on every measured shape), tuning on other GPUs;
    1 tunes everywhere, 0 nowhere."""
    monkeypatch.setattr(autotune, "INTERPRET", False)
    for cc, setting, tunes in (((9, 0), None, False), ((8, 9), None, True), ((12, 0), None, True),
                               ((9, 0), "1", True), ((8, 9), "0", False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, cc=cc: cc)
        if setting is None:
            monkeypatch.delenv("VORTA_AUTOTUNE", raising=False)
        else:
            monkeypatch.setenv("VORTA_AUTOTUNE", setting)
        assert (autotune.disabled_reason(device=torch.device("cuda")) is None) == tunes, (cc, setting)
