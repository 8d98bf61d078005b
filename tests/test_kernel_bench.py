"""The kernel benchmark's CPU-checkable parts (it needs a GPU to run): its arguments, that each model shape has
the grid its resolution gives and the tile preset 'auto' picks there, the consumer-card config list, the
precision hook and the tables' rendering (a formatting slip would otherwise surface after an hour of GPU time)."""
from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import kernel_bench  # noqa: E402
from kbench import configs, shapes, tables  # noqa: E402
from kbench.branches import UnknownPrecision, branch_runners  # noqa: E402
from kbench.measure import Dense  # noqa: E402

# name -> (video frames, height, width, pixels per token along H/W): Wan 2.1 and HunyuanVideo 8x VAE + 2x2 patch,
# Wan2.2-5B 16x VAE + 2x2 patch; frames (n - 1) / 4 + 1
RESOLUTIONS = {
    "Wan2.2-5B 720p 121f": (121, 704, 1280, 32),
    "Wan-14B 480p 81f": (81, 480, 832, 16),
    "Wan-14B 1024x1024 49f": (49, 1024, 1024, 16),
    "Wan-14B 720x1280 portrait 81f": (81, 1280, 720, 16),
    "Wan-14B 720p 121f": (121, 720, 1280, 16),
    "Wan-14B 720p 81f CFG B=2": (81, 720, 1280, 16),
    "Hunyuan 720p 117f text 100": (117, 720, 1280, 16),
    "Hunyuan 720p 129f text 256": (129, 720, 1280, 16),
}


def test_help_and_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        kernel_bench.parse_args(["--help"])
    assert e.value.code == 0 and "--consumer" in capsys.readouterr().out
    a = kernel_bench.parse_args(["--shapes", "5b,3,hunyuan", "--precision", "bf16,int8", "--only", "sliding,kitchen"])
    assert [s.name for s in a.shape_list][:2] == ["Wan2.2-5B 720p 121f", "Wan2.1-1.3B 480p"]
    assert all("hunyuan" in s.name.lower() for s in a.shape_list[2:]) and len(a.shape_list) == 6
    assert a.precisions == ["bf16", "int8"] and a.parts == ["sliding", "kitchen"]
    for bad in (["--shapes", "no such shape"], ["--shapes", "99"], ["--only", "dense"]):
        with pytest.raises(SystemExit):
            kernel_bench.parse_args(bad)


def test_list_runs_without_a_gpu(capsys):
    assert kernel_bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(shapes.SHAPES) and "PRESET SAYS" not in out


def test_model_shapes_have_their_resolution_grid_and_preset_tile():
    names = [s.name for s in shapes.SHAPES]
    assert len(set(names)) == len(names) and not any("," in n for n in names)
    by_name = {s.name: s for s in shapes.SHAPES}
    for name, (frames, h, w, px) in RESOLUTIONS.items():
        assert by_name[name].grid == ((frames - 1) // 4 + 1, h // px, w // px), name
    for s in shapes.SHAPES:
        if s.model is not None:
            assert shapes.preset_tile(s) == s.tile, s.name
            assert 192 <= s.tile_tokens <= 432, s.name
        if s.text_valid is not None:
            assert 0 < s.text_valid < s.text, s.name
    assert {s.tile_tokens for s in shapes.SHAPES if s.model} == {192, 360, 432}
    assert by_name["Wan-14B 720p 81f CFG B=2"].batch == 2


def test_consumer_configs_fit_a_consumer_card(monkeypatch):
    from comfyui_vorta.vorta.kernels import sliding_launch

    monkeypatch.setattr(sliding_launch, "INTERPRET", False)  # the interpreter has its own list
    monkeypatch.setenv(configs.ENV, "128,128,8,3,1")  # must not leak into the enumeration, and survive it
    for s in shapes.SHAPES:
        got = configs.consumer_configs(s)
        targets = {t for t, _ in got}
        assert targets == {t for t, _ in configs.CONSUMER_TARGETS}, s.name
        for target, c in got:
            assert configs.smem_estimate(c) <= configs.CONSUMER_SMEM or c.block_m == 32, (s.name, c)
            assert c.tma == dict(configs.CONSUMER_TARGETS)[target]
            assert configs.parse_sweep(configs.env_string(c)) == [("sweep", c)]  # the variable reads it back
    assert sliding_launch.os.environ[configs.ENV] == "128,128,8,3,1"
    monkeypatch.delenv(configs.ENV)
    # without the overrides nothing changes: no device, no limit, no TMA
    assert sliding_launch.sliding_configs(432, 128, None, 3 * 432) == sliding_launch.sliding_configs(
        432, 128, None, 3 * 432, smem_limit=None, tma=None)
    assert not any(c.tma for c in sliding_launch.sliding_configs(432, 128, None, 3 * 432))


def test_precision_hook(capsys):
    assert all(callable(f) for f in branch_runners("bf16"))
    with pytest.raises(UnknownPrecision):
        branch_runners("int8")
    assert kernel_bench.known_precisions(["bf16", "int8"]) == ["bf16"]
    assert "precision int8 skipped" in capsys.readouterr().out


def test_tables_render_every_kind_of_row():
    s = shapes.SHAPES[0]
    d, nan = Dense(10.0, "cuDNN"), float("nan")
    rows = [
        dict(branch="sliding", shape=s.name, precision="bf16", ms=5.0, spread=(4.9, 5.2), tflops=460.0, dense=d,
             flex=12.0, flex_err=2e-3, ref=nan, err=3e-3, ok=True),
        dict(branch="sliding", shape=s.name, precision="bf16", failed="OutOfResources: shared memory"),
        dict(branch="coreset", shape=s.name, precision="bf16", pooled=30000, ms=4.0, tflops=500.0, ideal=None,
             dense=Dense(10.0, "default SDPA (cuDNN failed)"), ref=8.0, err=2e-3, ok=False),
        dict(branch="kitchen", shape=s.name, method="SLA", dense=None, ms=3.0, tflops=300.0,
             tflops_kind="exec <= (budget)", err=0.3),
        dict(branch="kitchen", shape=s.name, method="INT8", dense=d, failed="not available"),
        dict(branch="config", shape=s.name, tile=s.tile, target="RTX 40", config="64,64,4,2,0,0,1", precision="bf16",
             est=49152, shared=None, ms=6.0, tflops=400.0, err=3e-3, ok=True),
        dict(branch="config", shape=s.name, tile=s.tile, target="RTX 40", config="128,64,8,3,0,0,1",
             precision="bf16", est=98304, shared=120000, failed="OutOfResources"),
    ]
    text = tables.document("HEADER", rows, shapes.SHAPES, "(partial)")
    blocks = [b for b in text.split("\n\n") if b.startswith("|")]
    assert len(blocks) == 4  # sliding, coreset, kitchen, launch configs
    for b in blocks:  # every row, failed ones included, has as many cells as its header
        assert len({ln.count("|") for ln in b.splitlines()}) == 1, b
    assert "NONFINITE" in text and "FAILED: OutOfResources" in text and " NO |" in text and "†" in text


def test_autotune_flag_and_choice_lines(monkeypatch):
    """--no-autotune parses; the autotuner's choices since the last shape are listed once, under the tables too."""
    from comfyui_vorta.vorta.kernels import autotune
    from comfyui_vorta.vorta.kernels.sliding_launch import LaunchConfig

    assert kernel_bench.parse_args(["--no-autotune"]).no_autotune and not kernel_bench.parse_args([]).no_autotune
    rule, pick = LaunchConfig(128, 128, 8, 3, True, 64), LaunchConfig(128, 64, 8, 4, True)
    key = ("sliding", "cuda:0", "torch.bfloat16", 128, (21, 30, 52), (4, 6, 8), (3, 3, 3), 0, False, False, 64,
           False)
    monkeypatch.setattr(autotune, "_TUNED", {key: autotune.Tuned(pick, 7.25, rule, 8.5, 8, 1, "measured")})
    seen: set = set()
    lines = kernel_bench.tuner_lines(seen, "Wan-14B 480p 81f")
    assert lines == ["Wan-14B 480p 81f (B*heads~64): (128,64,8,4,tma) 7.250 ms; rule (128,128,8,3,tma,tail64) "
                     "8.500 ms (measured, 8 candidates, 1 skipped)"]
    assert kernel_bench.tuner_lines(seen, "next shape") == []
    args = kernel_bench.parse_args(["--shapes", "7"])
    assert "- Wan-14B 480p 81f (B*heads~64): (128,64,8,4,tma)" in kernel_bench.write(args, "# head", [], tuned=lines)
