"""The convert command: a user mistake gives exit code 2 and one line on stderr naming the file and what to do;
only genuine bugs show a traceback."""
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from comfyui_vorta.vorta import convert as C
from test_router_files import official_state


@pytest.fixture
def router_pt(tmp_path):
    path = tmp_path / "router.pt"
    torch.save(official_state(), path)
    return path


def run(capsys, *argv):
    code = C.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def official_layout(tmp_path, config_text):
    d = tmp_path / "wan-14B" / "train" / "ckpt" / "step-000100"
    d.mkdir(parents=True)
    torch.save(official_state(), d / "router.pt")
    (tmp_path / "wan-14B" / "train" / "config.json").write_text(config_text)
    return d / "router.pt"


def test_success_prints_one_summary_line(capsys, tmp_path, router_pt):
    code, out, err = run(capsys, router_pt, tmp_path / "w.safetensors")
    assert code == 0 and err == "" and out.count("\n") == 1
    assert "wan" in out and "3 layers x 4 heads" in out and "preset wan2.1-14b-720p" in out


def _empty(tmp):
    (tmp / "empty.pt").write_bytes(b"")
    return [tmp / "empty.pt", tmp / "o.safetensors"], "empty.pt", r"is empty \(0 bytes\)"


def _nan(tmp):
    s = official_state()
    s["blocks.0.router.linear.weight"][0, 0] = float("nan")
    torch.save(s, tmp / "nan.pt")
    return [tmp / "nan.pt", tmp / "o.safetensors"], "nan.pt", r"blocks\.0\.router\.linear\.weight has 1 NaN/inf"


def _model(tmp):
    torch.save({"blocks.0.self_attn.q.weight": torch.ones(2, 2)}, tmp / "model.pt")
    return [tmp / "model.pt", tmp / "o.safetensors"], "model.pt", "no router keys found"


def _broken_config(tmp):
    src = official_layout(tmp, '{"self_attention_kwargs": ')
    return [src, tmp / "o.safetensors"], "config.json", "broken JSON"


def _wrong_config(tmp):
    src = official_layout(tmp, '{"self_attention_kwargs": {"tile_size": [5, 9], "window_size": [3, 3, 3], '
                               '"lowres_window_size": [2, 3, 2], "lowres_reduction_rate": 0.5}}')
    return [src, tmp / "o.safetensors"], "config.json", "tile_size must be three positive integers"


def _missing_config(tmp):
    torch.save(official_state(), tmp / "router.pt")
    return ([tmp / "router.pt", tmp / "o.safetensors", "--config", tmp / "cfg.json"], "cfg.json",
            "config file not found")


def _folder_input(tmp):
    (tmp / "wan-14B").mkdir()
    return [tmp / "wan-14B", tmp / "o.safetensors"], "wan-14B", "is a folder; pick the router file inside it"


def _safetensors_input(tmp):
    return [tmp / "done.safetensors", tmp / "o.safetensors"], "done.safetensors", "already a .safetensors router"


def _folder_output(tmp):
    (tmp / "dir.safetensors").mkdir()
    return [tmp / "router.pt", tmp / "dir.safetensors"], "dir.safetensors", "is a folder; give the output a file name"


def _with_router(make):
    def build(tmp):
        torch.save(official_state(), tmp / "router.pt")
        return make(tmp)
    return build


USER_MISTAKES = [
    ("missing input", lambda tmp: ([tmp / "nope.pt", tmp / "o.safetensors"], "nope.pt", "file not found")),
    ("input is a folder", _folder_input),
    ("input already converted", _safetensors_input),
    ("empty input", _empty),
    ("NaN in input", _nan),
    ("model checkpoint as input", _model),
    ("broken config.json", _broken_config),
    ("wrong config.json", _wrong_config),
    ("--config missing", _missing_config),
    ("missing output folder", _with_router(lambda tmp: ([tmp / "router.pt", tmp / "no" / "such" / "o.safetensors"],
                                                        os.path.join("no", "such"), "does not exist; create it first"))),
    ("output not .safetensors", _with_router(lambda tmp: ([tmp / "router.pt", tmp / "o.pt"], "o.pt",
                                                          "must end with .safetensors"))),
    ("output is a folder", _with_router(_folder_output)),
]


@pytest.mark.parametrize("build", [m[1] for m in USER_MISTAKES], ids=[m[0] for m in USER_MISTAKES])
def test_user_mistakes_exit_2_with_one_line(capsys, tmp_path, build):
    argv, named, problem = build(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert named in err and re.search(problem, err), err
    assert not (tmp_path / "o.safetensors").exists()


def test_write_failure_is_a_user_error(capsys, tmp_path, router_pt, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(C, "save_safetensors", full_disk)
    code, _, err = run(capsys, router_pt, tmp_path / "o.safetensors")
    assert code == 2 and "o.safetensors: cannot be written" in err and "No space left" in err
    assert err.count("\n") == 1


def test_a_bug_still_shows_its_traceback(tmp_path, router_pt, monkeypatch):
    def bug(path):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(C, "load_official_checkpoint", bug)
    with pytest.raises(ZeroDivisionError):
        C.main([str(router_pt), str(tmp_path / "o.safetensors")])


def test_convert_router_script_runs_from_any_install(tmp_path, router_pt):
    """`python custom_nodes/<pack folder>/convert_router.py` from the ComfyUI folder, with nothing installed and
    nothing on PYTHONPATH (Manager, comfy-cli and git installs): converts, and reports a mistake in one line."""
    script = pathlib.Path(__file__).resolve().parents[1] / "convert_router.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "models" / "w.safetensors"
    out.parent.mkdir()
    done = subprocess.run([sys.executable, str(script), str(router_pt), str(out)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "3 layers x 4 heads" in done.stdout, done.stderr[-2000:]
    cmd = [sys.executable, str(script), str(tmp_path / "nope.pt"), str(tmp_path / "o.safetensors")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.pt'}: file not found; check the path "
                                                "(router files go in ComfyUI/models/vorta)"]
