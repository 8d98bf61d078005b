"""Router files: round trips, and the table of bad files with the message each one gives.

Every bad file must be refused with RouterFileError whose one-line message names the file, says what is wrong
and what to do; none may load (a NaN router quietly sends its heads to full attention).
"""
import json
import os
import pathlib
import pickle
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

from comfyui_vorta.vorta.comfy import folders
from comfyui_vorta.vorta.comfy.loading import load_bundle
from comfyui_vorta.vorta import router_files
from comfyui_vorta.vorta.config import PRESETS, VortaConfig
from comfyui_vorta.vorta.convert import main as convert_main
from comfyui_vorta.vorta.router import make_random_routers, official_layer_names, router_input
from comfyui_vorta.vorta.router_files import (ROUTER_EXTENSIONS, RouterFileError, check_fits,
                                              load_official_checkpoint, load_safetensors, save_safetensors)


def official_state(family="wan", layers=3, heads=4, dim=32, seed=0):
    names = official_layer_names(family, layers, double=2, single=3)
    rs = make_random_routers(family, names, dim, heads, seed=seed)
    state = {}
    for n, w, b in zip(names, rs.weight, rs.bias):
        state[f"{n}.router.linear.weight"] = w.clone()
        state[f"{n}.router.linear.bias"] = b.clone()
    return state


OFFICIAL_CONFIG = {"name": "WanTransformer3DModel", "self_attention_kwargs": {
    "lowres_window_size": [2, 2, 2], "lowres_reduction_rate": 0.25, "window_size": [3, 3, 5],
    "tile_size": [4, 8, 8], "latent_shape": [20, 48, 80]}}


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
    (tmp_path / "train" / "config.json").write_text(json.dumps(OFFICIAL_CONFIG, indent=4))
    out = tmp_path / "o.safetensors"
    assert convert_main([str(d / "router.pt"), str(out)]) == 0
    _, cfg = load_safetensors(str(out))
    assert cfg == VortaConfig(tile=(4, 8, 8), window=(3, 3, 5), bucket=(2, 2, 2), ratio=0.25)


def test_wrapper_prefixes_are_accepted(tmp_path):
    state = {"_fsdp_wrapped_module." + k: v for k, v in official_state().items()}
    torch.save(state, tmp_path / "r.pt")
    assert load_official_checkpoint(str(tmp_path / "r.pt")).num_layers == 3


def test_router_must_fit_model():
    rs = make_random_routers("wan", official_layer_names("wan", 40), dim=64, heads=4)
    check_fits(rs, "wan", 40, 4, 64)
    with pytest.raises(RouterFileError, match="30 routed layers|40 routed layers vs 30"):
        check_fits(rs, "wan", 30, 4, 64)
    with pytest.raises(RouterFileError, match="wan router but the model is hunyuan"):
        check_fits(rs, "hunyuan", 40, 4, 64)


# ---- builders: each writes one file into tmp and returns (path to load, path the message must name) ----

def pt(state, name="router.pt"):
    def build(tmp):
        path = tmp / name
        torch.save(state() if callable(state) else state, path)
        return path, path
    return build


def edit(change, family="wan", name="router.pt"):
    """The official file with one change to its state dict."""
    return pt(lambda: change(official_state(family)), name)


def set_value(key, index, value):
    def change(s):
        s[key].view(-1)[index] = value
        return s
    return change


def raw(data: bytes, name="router.pt"):
    def build(tmp):
        path = tmp / name
        path.write_bytes(data)
        return path, path
    return build


def truncated(fraction, name="router.pt"):
    def build(tmp):
        whole = tmp / "whole.pt"
        torch.save(official_state(), whole)
        path = tmp / name
        data = whole.read_bytes() if name.endswith(".pt") else _ours_bytes(tmp)
        path.write_bytes(data[: int(len(data) * fraction)])
        return path, path
    return build


def _ours_bytes(tmp):
    p = tmp / "whole.safetensors"
    save_safetensors(load_official_checkpoint(str(_write_official(tmp / "src.pt"))), str(p), VortaConfig())
    return p.read_bytes()


def _write_official(path, state=None):
    torch.save(state if state is not None else official_state(), path)
    return path


def ours(meta=None, change=None, name="r.safetensors"):
    """Our .safetensors with metadata fields replaced (None removes one) or the tensors changed."""
    def build(tmp):
        src = tmp / "src.safetensors"
        save_safetensors(load_official_checkpoint(str(_write_official(tmp / "src.pt"))), str(src), VortaConfig())
        good, _ = load_safetensors(str(src))
        m = {**good.metadata, **(meta or {})}
        m = {k: v for k, v in m.items() if v is not None}
        state = {f"{n}.router.linear.{p}": t[i].contiguous() for p, t in (("weight", good.weight), ("bias", good.bias))
                 for i, n in enumerate(good.layer_names)}
        path = tmp / name
        save_file(change(state) if change else state, path, metadata=m)
        return path, path
    return build


def header(text: str, name="r.safetensors"):
    """A safetensors file whose JSON header is exactly ``text`` (no tensors)."""
    data = text.encode()
    return raw(struct.pack("<Q", len(data)) + data, name)


def beside(config_text, name="config.json"):
    """The official layout: train/config.json (as given) above train/ckpt/step-000100/router.pt."""
    def build(tmp):
        d = tmp / "wan-14B" / "train" / "ckpt" / "step-000100"
        d.mkdir(parents=True)
        _write_official(d / "router.pt")
        cfg = tmp / "wan-14B" / "train" / name
        cfg.write_bytes(config_text if isinstance(config_text, bytes) else config_text.encode())
        return d / "router.pt", cfg
    return build


def kwargs(**changes):
    kw = {**OFFICIAL_CONFIG["self_attention_kwargs"], **changes}
    return json.dumps({"self_attention_kwargs": {k: v for k, v in kw.items() if v is not None}})


class NotATensor:
    pass


def optimizer_state():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))])
    return opt.state_dict()


def folder(tmp):
    path = tmp / "router.pt"
    path.mkdir()
    return path, path


AGAIN = "download or convert it again"
OFFICIAL = r"use the official router\.pt \(Hugging Face Wenhao-Sun/VORTA"
# the hint names this install's own converter (Manager/comfy-cli and git put the pack in differently named folders)
CONVERT_SCRIPT = pathlib.Path(os.path.abspath(router_files.__file__)).parents[1] / "convert_router.py"
CONVERT = re.escape(f"use the official router.pt as it is, or convert it again (`python {CONVERT_SCRIPT} router.pt")
CONFIG = r"fix it, or remove it to use the official settings"
NAN = r"NaN/inf values \(those heads would silently run full attention\)"

# id, builder, what is wrong (regex), what to do (regex)
BAD_FILES = [
    # the official router.pt: not a usable torch file
    ("missing file", lambda tmp: (tmp / "nope.pt",) * 2, "file not found", "check the path"),
    ("a folder", folder, "is a folder", "pick the router file inside it"),
    ("empty .pt (0 bytes)", raw(b""), r"is empty \(0 bytes\)", AGAIN),
    ("truncated .pt (200 bytes)", truncated(0.02), "is truncated or damaged", AGAIN),
    ("truncated .pt (half)", truncated(0.5), "is truncated or damaged", AGAIN),
    ("Git LFS pointer", raw(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"),
     "is a Git LFS pointer", "git lfs pull"),
    ("HTML error page", raw(b"<!DOCTYPE html><html>404</html>"), "not a torch checkpoint that loads safely", OFFICIAL),
    ("pickle of a Python object", pt({"x": NotATensor()}),
     r"holds a Python object \(\S*NotATensor\) besides tensors, which is refused for safety", OFFICIAL),
    ("plain pickle, not torch", raw(pickle.dumps({"a": 1})), "not a torch checkpoint that loads safely", OFFICIAL),
    ("unknown extension", pt(official_state(), "router.ckpt"), "unknown router file type",
     r"expected \.safetensors, \.pt, \.pth, \.bin"),
    # a torch file, but not a dict of router tensors
    ("non-dict pickle (list)", pt([torch.ones(3)]), "holds a list, not a dict of router tensors", OFFICIAL),
    ("bare tensor", pt(torch.ones(3)), "holds a Tensor, not a dict", OFFICIAL),
    ("empty dict", pt({}), r"holds no tensors \(an empty dict\)", AGAIN),
    ("non-tensor values", edit(lambda s: {**s, "step": 100}), r"not tensors: \['step \(int\)'\]", OFFICIAL),
    ("optimizer.pt", pt(optimizer_state, "optimizer.pt"), r"is an optimizer state \(optimizer\.pt\)",
     "pick the router.pt beside it"),
    ("model checkpoint keys", pt({"blocks.0.self_attn.q.weight": torch.randn(4, 4)}), "no router keys found",
     OFFICIAL),
    # wrong key sets
    ("extra key", edit(lambda s: {**s, "blocks.0.router.scale": torch.ones(1)}), "1 unexpected keys", OFFICIAL),
    ("mixed families", edit(lambda s: {**s, "transformer_blocks.0.router.linear.weight": torch.randn(12, 32)}),
     "mixes Wan", OFFICIAL),
    ("hunyuan without single blocks", edit(lambda s: {k: v for k, v in s.items() if k.startswith("transformer")},
                                           "hunyuan"), "need both double and single blocks", AGAIN),
    ("missing layer", edit(lambda s: {k: v for k, v in s.items() if not k.startswith("blocks.1.")}),
     r"missing routers for blocks\.\[1\]", AGAIN),
    ("missing bias", edit(lambda s: {k: v for k, v in s.items() if k != "blocks.1.router.linear.bias"}),
     r"missing key blocks\.1\.router\.linear\.bias", AGAIN),
    # wrong tensors
    ("wrong shape", edit(lambda s: {**s, "blocks.2.router.linear.weight": torch.randn(11, 32)}),
     r"blocks\.2 router has weight \(11, 32\) and bias \(12,\)", OFFICIAL),
    ("layers disagree", edit(lambda s: {**s, "blocks.2.router.linear.weight": torch.randn(12, 16)}),
     "router layers disagree in shape", OFFICIAL),
    ("zero heads", edit(lambda s: {**s, "blocks.0.router.linear.weight": torch.ones(0, 32),
                                   "blocks.0.router.linear.bias": torch.ones(0)}), r"weight \(0, 32\)", OFFICIAL),
    ("sparse tensor", edit(lambda s: {**s, "blocks.0.router.linear.weight": torch.ones(12, 32).to_sparse()}),
     "router tensors must be dense, got torch.sparse_coo", OFFICIAL),
    ("int tensors", edit(lambda s: {k: v.to(torch.int32) for k, v in s.items()}), "must be floating point",
     OFFICIAL),
    ("NaN weight", edit(set_value("blocks.1.router.linear.weight", 5, float("nan"))),
     r"blocks\.1\.router\.linear\.weight has 1 " + NAN, AGAIN),
    ("inf bias", edit(set_value("blocks.2.router.linear.bias", 0, float("inf"))),
     r"blocks\.2\.router\.linear\.bias has 1 " + NAN, AGAIN),
    ("-inf in a hunyuan single block", edit(set_value("single_transformer_blocks.1.router.linear.weight", 0,
                                                      float("-inf")), "hunyuan"),
     r"single_transformer_blocks\.1\.router\.linear\.weight has 1 " + NAN, AGAIN),
    # config.json beside the official router.pt
    ("config.json: broken JSON", beside('{"self_attention_kwargs": {"tile_size": [5, 9,'),
     r"broken JSON \(.* at line 1 column \d+\)", CONFIG),
    ("config.json: not UTF-8", beside(b"\xff\xfe\x00garbage"), "cannot be read as a JSON text file", CONFIG),
    ("config.json: a list", beside("[1, 2, 3]"), "expected a JSON object with self_attention_kwargs, got a JSON list",
     CONFIG),
    ("config.json: no self_attention_kwargs", beside('{"name": "WanTransformer3DModel"}'),
     "has no self_attention_kwargs", CONFIG),
    ("config.json: self_attention_kwargs a list", beside('{"self_attention_kwargs": [5, 9, 8]}'),
     "self_attention_kwargs must be a JSON object", CONFIG),
    ("config.json: field missing", beside(kwargs(lowres_reduction_rate=None)),
     "self_attention_kwargs lacks lowres_reduction_rate", CONFIG),
    ("config.json: tile of two", beside(kwargs(tile_size=[5, 9])),
     r"self_attention_kwargs\.tile_size must be three positive integers .*\[5, 9\]", CONFIG),
    ("config.json: tile as text", beside(kwargs(tile_size="5,9,8")), r"tile_size must be three positive integers",
     CONFIG),
    ("config.json: zero window", beside(kwargs(window_size=[0, 3, 3])), r"window_size must be three positive", CONFIG),
    ("config.json: ratio 1.5", beside(kwargs(lowres_reduction_rate=1.5)),
     r"lowres_reduction_rate must be a number in \[0, 1\), got 1\.5", CONFIG),
    # our .safetensors
    ("empty .safetensors", raw(b"", "r.safetensors"), r"is empty \(0 bytes\)", AGAIN),
    ("truncated .safetensors", truncated(0.7, "r.safetensors"), "not a readable safetensors file", AGAIN),
    ("broken header JSON", header('{"__metadata__": {"format": ', "r.safetensors"),
     "not a readable safetensors file .*invalid JSON", AGAIN),
    ("metadata value not a string", header('{"__metadata__": {"layers": 3}}'),
     "not a readable safetensors file .*invalid type: integer", AGAIN),
    ("plain safetensors (no metadata)", lambda tmp: _plain_safetensors(tmp), "not a VORTA router file",
     "use the official router.pt as it is, or convert it with `convert_router.py`"),
    ("newer format version", ours({"format_version": "2"}), "format version '2'", "update ComfyUI-VORTA"),
    ("metadata without layers", ours({"layers": None}), "metadata lacks layers", CONVERT),
    ("metadata family unknown", ours({"family": "flux"}), "metadata family 'flux' is not one of wan, hunyuan",
     CONVERT),
    ("wrong family metadata", ours({"family": "hunyuan"}), "metadata says family=hunyuan but the tensors give wan",
     CONVERT),
    ("heads not a number", ours({"heads": "four"}), "metadata 'heads' must be an integer, got 'four'", CONVERT),
    ("heads disagree", ours({"heads": "5"}), "metadata says heads=5 but the tensors give 4", CONVERT),
    ("branch order", ours({"branch_order": "full,sliding,coreset"}), "branch order", CONVERT),
    ("tile of two", ours({"tile_size": "5,9"}), r"metadata 'tile_size' must be three positive integers", CONVERT),
    ("tile not numbers", ours({"tile_size": "a,b,c"}), "metadata 'tile_size' must be three integers like", CONVERT),
    ("ratio not a number", ours({"coreset_ratio": "half"}), "metadata 'coreset_ratio' must be a number", CONVERT),
    ("ratio 1.5", ours({"coreset_ratio": "1.5"}), r"coreset_ratio' must be a number in \[0, 1\)", CONVERT),
    ("ratio missing", ours({"coreset_ratio": None}), "metadata lacks coreset_ratio", CONVERT),
    ("NaN in .safetensors", ours(change=lambda s: {**s, "blocks.0.router.linear.bias": torch.full((12,), float("nan"))}),
     r"blocks\.0\.router\.linear\.bias has 12 " + NAN, AGAIN),
    ("int tensors in .safetensors", ours(change=lambda s: {k: v.to(torch.int8) for k, v in s.items()}),
     "must be floating point", OFFICIAL),
]


def _plain_safetensors(tmp):
    path = tmp / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in official_state().items()}, path)
    return path, path


def test_convert_hint_names_this_installs_converter():
    """The hint's command runs as shown: the script it names exists, whatever the pack's folder is called."""
    assert CONVERT_SCRIPT.is_file() and CONVERT_SCRIPT.parent.joinpath("__init__.py").is_file()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the plain-pickle row
@pytest.mark.parametrize("build,problem,hint", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_router_files_name_the_file_the_problem_and_what_to_do(tmp_path, build, problem, hint):
    load, named = build(tmp_path)
    with pytest.raises(RouterFileError) as info:
        load_bundle(str(load))  # what the loader node calls
    message = str(info.value)
    assert str(named) in message and "\n" not in message, message
    assert_matches(problem, message)
    assert_matches(hint, message)


def assert_matches(pattern, message):
    import re

    assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


GOOD_NAMES = ["router.PT", "router.Pt", "router.pth", "router.bin", "R.SAFETENSORS", "r.SafeTensors"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_router_extensions_in_any_case_load_and_are_listed(tmp_path, name):
    state = official_state()
    path = tmp_path / name
    if name.lower().endswith(".safetensors"):
        save_safetensors(load_official_checkpoint(str(_write_official(tmp_path / "src.pt"))), str(path),
                         VortaConfig(tile=(1, 2, 2)))
    else:
        torch.save(state, path)
    bundle = load_bundle(str(path))
    assert torch.equal(bundle.routers.weight[1], state["blocks.1.router.linear.weight"])
    assert bundle.trained_with.tile == ((1, 2, 2) if "safetensors" in name.lower() else (5, 9, 8))
    # ComfyUI lists a file when os.path.splitext(name)[1].lower() is in the folder's extensions
    assert os.path.splitext(name)[1].lower() in folders.EXTENSIONS


def test_one_list_of_extensions():
    assert folders.EXTENSIONS == set(ROUTER_EXTENSIONS)
    assert all(e == e.lower() and e.startswith(".") for e in ROUTER_EXTENSIONS)


def test_official_layout_config_json_with_bom_and_top_level_fields(tmp_path):
    load, _ = beside(b"\xef\xbb\xbf" + json.dumps(OFFICIAL_CONFIG).encode())(tmp_path)
    assert load_bundle(str(load)).trained_with.tile == (4, 8, 8)
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(OFFICIAL_CONFIG["self_attention_kwargs"]))
    out = tmp_path / "o.safetensors"
    assert convert_main([str(load), str(out), "--config", str(flat)]) == 0
    assert load_safetensors(str(out))[1].window == (3, 3, 5)



def test_official_router_pt_dropped_into_models_vorta_works_with_or_without_its_config(tmp_path):
    """All a user does is drop router.pt (any name) into models/vorta, with or without the config.json beside it;
    a config.json further up (ComfyUI's own folders) is never read."""
    comfy = tmp_path / "ComfyUI"
    vorta = comfy / "models" / "vorta"
    vorta.mkdir(parents=True)
    (comfy / "models" / "config.json").write_text("{not json")  # unrelated files above the router folder
    (comfy / "config.json").write_text("[]")
    _write_official(vorta / "vorta_wan2.1_t2v_14b_router.pt")
    assert load_bundle(str(vorta / "vorta_wan2.1_t2v_14b_router.pt")).trained_with == PRESETS["wan2.1-14b-720p"].config
    (vorta / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    assert load_bundle(str(vorta / "vorta_wan2.1_t2v_14b_router.pt")).trained_with.tile == (4, 8, 8)
