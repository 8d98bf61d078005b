import io
import os

import pytest
import torch
from safetensors.torch import save_file

from comfyui_vorta.vorta.convert import main as convert_main
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names, router_input
from comfyui_vorta.vorta.router_files import (RouterFileError, check_fits, load_official_checkpoint, load_router_file,
                                              load_safetensors)


def official_state(family="wan", layers=3, heads=4, dim=32, seed=0):
    names = official_layer_names(family, layers, double=2, single=3)
    rs = make_random_routers(family, names, dim, heads, seed=seed)
    state = {}
    for n, w, b in zip(names, rs.weight, rs.bias):
        state[f"{n}.router.linear.weight"] = w.clone()
        state[f"{n}.router.linear.bias"] = b.clone()
    return state


@pytest.mark.parametrize("family", ["wan", "hunyuan"])
def test_round_trip_official_pt_to_safetensors_same_decisions(tmp_path, family):
    pt = tmp_path / "router.pt"
    torch.save(official_state(family), pt)
    st = tmp_path / "r.safetensors"
    assert convert_main([str(pt), str(st)]) == 0
    a = load_official_checkpoint(str(pt))
    b, cfg = load_safetensors(str(st))
    assert a.layer_names == b.layer_names and torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert b.metadata["family"] == family and cfg.tile == ((6, 9, 8) if family == "hunyuan" else (5, 9, 8))
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 32), torch.nn.SiLU(), torch.nn.Linear(32, 32))
    for t in (999.0, 600.0, 3.0):
        temb = router_input(family, mlp, torch.tensor([t]))
        assert torch.equal(a.decide(temb), b.decide(temb))


def test_convert_reads_official_config_json(tmp_path):
    d = tmp_path / "train" / "ckpt" / "step-000100"
    d.mkdir(parents=True)
    torch.save(official_state("wan"), d / "router.pt")
    (tmp_path / "train" / "config.json").write_text(
        '{"self_attention_kwargs": {"lowres_window_size": [2, 2, 2], "lowres_reduction_rate": 0.25, '
        '"window_size": [3, 3, 5], "tile_size": [4, 8, 8], "latent_shape": [20, 48, 80]}}')
    out = tmp_path / "o.safetensors"
    assert convert_main([str(d / "router.pt"), str(out)]) == 0
    _, cfg = load_safetensors(str(out))
    assert cfg.tile == (4, 8, 8) and cfg.window == (3, 3, 5) and cfg.bucket == (2, 2, 2) and cfg.ratio == 0.25


def test_wrapper_prefixes_are_accepted(tmp_path):
    state = {"_fsdp_wrapped_module." + k: v for k, v in official_state().items()}
    torch.save(state, tmp_path / "r.pt")
    assert load_official_checkpoint(str(tmp_path / "r.pt")).num_layers == 3


def _missing_key(s):
    s.pop("blocks.1.router.linear.bias")
    return s


def _wrong_shape(s):
    s["blocks.2.router.linear.weight"] = torch.randn(11, 32)
    return s


def _gap(s):
    s.pop("blocks.1.router.linear.bias"), s.pop("blocks.1.router.linear.weight")
    return s


def _mixed(s):
    s["transformer_blocks.0.router.linear.weight"] = torch.randn(12, 32)
    return s


BAD_PT = [
    ("missing bias", _missing_key, "missing key blocks.1.router.linear.bias"),
    ("wrong shape", _wrong_shape, "disagree in shape|expected weight"),
    ("missing layer", _gap, r"missing routers for blocks\.\[1\]"),
    ("mixed families", _mixed, "mixes Wan"),
    ("not router keys", lambda s: {"blocks.0.attn.q.weight": torch.randn(4, 4)}, "no router keys"),
    ("extra key", lambda s: {**s, "blocks.0.router.scale": torch.ones(1)}, "unexpected keys"),
    ("non-tensor", lambda s: {**s, "step": 100}, "not tensors"),
    ("int tensors", lambda s: {k: v.to(torch.int32) for k, v in s.items()}, "floating point"),
    ("empty", lambda s: {}, "non-empty dict"),
]


@pytest.mark.parametrize("name,mutate,message", BAD_PT, ids=[b[0] for b in BAD_PT])
def test_bad_official_files_name_the_problem(tmp_path, name, mutate, message):
    path = tmp_path / "router.pt"
    torch.save(mutate(official_state()), path)
    with pytest.raises(RouterFileError, match=message):
        load_official_checkpoint(str(path))


class NotATensor:
    pass


def test_truncated_and_unsafe_and_missing_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(official_state(), good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(RouterFileError, match="truncated"):
        load_official_checkpoint(str(trunc))
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"x": NotATensor()}, unsafe)
    with pytest.raises(RouterFileError, match="not a readable router checkpoint"):
        load_official_checkpoint(str(unsafe))
    with pytest.raises(RouterFileError, match="not found"):
        load_router_file(str(tmp_path / "nope.pt"))
    with pytest.raises(RouterFileError, match="unknown router file type"):
        load_router_file(str(tmp_path / "r.ckpt"))


def test_bad_safetensors_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in official_state().items()}, plain)
    with pytest.raises(RouterFileError, match="not a VORTA router file"):
        load_safetensors(str(plain))
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(RouterFileError, match="not a readable safetensors"):
        load_safetensors(str(trunc))
    lying = tmp_path / "lying.safetensors"
    meta = {"format": "vorta-router", "family": "wan", "layers": "3", "heads": "5", "dim": "32",
            "tile_size": "5,9,8", "window_size": "3,3,3", "bucket_size": "2,3,2", "coreset_ratio": "0.5"}
    save_file({k: v.contiguous() for k, v in official_state().items()}, lying, metadata=meta)
    with pytest.raises(RouterFileError, match="heads=5 but the tensors give 4"):
        load_safetensors(str(lying))


def test_router_must_fit_model():
    rs = make_random_routers("wan", official_layer_names("wan", 40), dim=64, heads=4)
    check_fits(rs, "wan", 40, 4, 64)
    with pytest.raises(RouterFileError, match="30 routed layers|40 routed layers vs 30"):
        check_fits(rs, "wan", 30, 4, 64)
    with pytest.raises(RouterFileError, match="wan router but the model is hunyuan"):
        check_fits(rs, "hunyuan", 40, 4, 64)
