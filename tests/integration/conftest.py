"""Integration tests against a real ComfyUI checkout (``COMFYUI_PATH``), on CPU.

Tiny random-weight Wan / HunyuanVideo checkpoints are written in ComfyUI's key format, loaded with ComfyUI's own
loader and sampled with ComfyUI's own KSampler.  The tests skip with the reason when ``COMFYUI_PATH`` is unset.
ComfyUI model_base imports torchvision; on a CPU-only env the import-only stub written by ``setup_comfyui.sh``
(``$COMFYUI_PATH/../comfyui_stubs`` or ``$VORTA_COMFYUI_STUBS``) is put on sys.path when torchvision is missing.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import types

import pytest
import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def comfyui_path():
    return os.environ.get("COMFYUI_PATH")


def stub_dir():
    env = os.environ.get("VORTA_COMFYUI_STUBS")
    if env:
        return env
    p = comfyui_path()
    return str(pathlib.Path(p).resolve().parent / "comfyui_stubs") if p else None


def pytest_collection_modifyitems(config, items):
    """Run the ComfyUI tests last: importing ComfyUI puts its `comfy`/`nodes` modules into sys.modules."""
    inside = [i for i in items if HERE in pathlib.Path(str(i.fspath)).resolve().parents]
    outside = [i for i in items if i not in inside]
    items[:] = outside + inside


def _setup_comfy():
    path = comfyui_path()
    if not path:
        pytest.skip("COMFYUI_PATH is not set: point it at a ComfyUI checkout (see README, 'Integration tests')")
    if not (pathlib.Path(path) / "comfy" / "sd.py").is_file():
        pytest.skip(f"COMFYUI_PATH={path} does not look like a ComfyUI checkout (no comfy/sd.py)")
    if path not in sys.path:
        sys.path.insert(0, path)
    if importlib.util.find_spec("torchvision") is None:
        stubs = stub_dir()
        if not stubs or not (pathlib.Path(stubs) / "torchvision").is_dir():
            pytest.skip("torchvision is not installed and no import-only stub was found; run "
                        "tests/integration/setup_comfyui.sh or set VORTA_COMFYUI_STUBS")
        sys.path.insert(0, stubs)
    from comfy.cli_args import args

    args.cpu = True
    # main.py imports ComfyUI's top-level `utils` package before nodes.py puts comfy/ (with comfy/utils.py) first
    # on sys.path; do the same so comfy_extras that import utils.install_util load as they do in the server.
    import utils.extra_config  # noqa: F401
    import comfy.model_management  # noqa: F401
    import comfy.sd  # noqa: F401
    import nodes  # noqa: F401  (ComfyUI's nodes.py)

    assert str(pathlib.Path(nodes.__file__).resolve()).startswith(str(pathlib.Path(path).resolve())), nodes.__file__


def hunyuan_params(kind: str) -> dict:
    """A tiny HunyuanVideo (v1) or HunyuanVideo 1.5 (byt5 glyph tokens, vision tokens, type embedding, no single
    blocks) with the parameters this ComfyUI's ``HunyuanVideoParams`` declares (0.3.70 added three required ones)."""
    import dataclasses

    from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

    p = dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=256, mlp_ratio=4.0,
             num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2],
             qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False)
    fields = {f.name for f in dataclasses.fields(HunyuanVideoParams)}
    new = dict(use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)
    if kind == "hunyuan15":
        if "vision_in_dim" not in fields:
            pytest.skip("this ComfyUI has no HunyuanVideo 1.5 (added in 0.3.70)")
        p.update(in_channels=65, out_channels=32, vec_in_dim=None, depth_single_blocks=0, byt5=True, guidance_embed=False)
        new = dict(use_cond_type_embedding=True, vision_in_dim=1152, meanflow_sum=True)
    p.update({k: v for k, v in new.items() if k in fields})
    return p


def _fill(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith(("weight", "scale")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def _save(module: torch.nn.Module, path: pathlib.Path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


class Harness:
    """Tiny models, conditioning with real shapes, ComfyUI's loader and sampler."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        self._paths = {}

    # ---------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self, kind: str) -> str:
        if kind in self._paths:
            return self._paths[kind]
        import comfy.ops
        from comfy.ldm.hunyuan_video.model import HunyuanVideo
        from comfy.ldm.wan.model import VaceWanModel, WanModel

        ops = comfy.ops.disable_weight_init
        common = dict(dim=256, num_heads=2, num_layers=2, ffn_dim=512, text_dim=4096, freq_dim=256, out_dim=16,
                      operations=ops, device="cpu", dtype=torch.float32)
        if kind in ("wan_t2v", "wan_t2v_b"):  # _b: other weights (a second expert / another model)
            m = WanModel(model_type="t2v", in_dim=16, **common)
        elif kind == "wan22_5b":  # Wan 2.2 TI2V-5B layout: 48-channel latent in and out
            m = WanModel(model_type="t2v", in_dim=48, **{**common, "out_dim": 48})
        elif kind == "wan_i2v":
            m = WanModel(model_type="i2v", in_dim=36, **common)
        elif kind == "wan_vace":
            m = VaceWanModel(in_dim=16, vace_layers=1, vace_in_dim=96, **common)
        elif kind in ("hunyuan", "hunyuan15"):
            m = HunyuanVideo(**hunyuan_params(kind), operations=ops, device="cpu", dtype=torch.float32)
        else:
            raise ValueError(kind)
        _fill(m, seed=sum(kind.encode()))  # fixed per kind (never str hash)
        self._paths[kind] = _save(m, self.tmp / f"tiny_{kind}.safetensors")
        return self._paths[kind]

    def load(self, kind: str):
        import comfy.sd

        return comfy.sd.load_diffusion_model(self.checkpoint(kind))

    # --------------------------------------------------------------------------------------- conditioning
    @staticmethod
    def wan_cond(seed: int, tokens: int = 7, clip_vision: bool = False):
        g = torch.Generator().manual_seed(seed)
        c = torch.zeros(1, 512, 4096)  # umt5: min_length 512, zeros after the prompt tokens
        c[:, :tokens] = torch.randn(1, tokens, 4096, generator=g)
        extra = {}
        if clip_vision:
            extra["clip_vision_output"] = types.SimpleNamespace(
                penultimate_hidden_states=torch.randn(1, 257, 1280, generator=g))
        return [[c, extra]]

    @staticmethod
    def hunyuan_cond(seed: int, tokens: int = 24, valid: int = None):
        g = torch.Generator().manual_seed(seed)
        extra = {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 6.0}
        if valid is not None:
            extra["attention_mask"] = (torch.arange(tokens) < valid).long()[None]
        return [[torch.randn(1, tokens, 4096, generator=g), extra]]

    # -------------------------------------------------------------------------------------------- sampling
    @staticmethod
    def sample(model, latent_shape, pos, neg, steps: int = 3, cfg: float = 3.0, seed: int = 0, sampler="euler",
               scheduler="simple"):
        import nodes

        latent = {"samples": torch.zeros(latent_shape)}
        return nodes.KSampler().sample(model, seed, steps, cfg, sampler, scheduler, pos, neg, latent)[0]["samples"]


@pytest.fixture(scope="session")
def comfy():
    _setup_comfy()
    return True


@pytest.fixture(scope="session")
def harness(comfy, tmp_path_factory):
    return Harness(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def comfy_paths(comfy):
    """(ComfyUI checkout, folder holding the torchvision stub or None)."""
    return comfyui_path(), stub_dir()


@pytest.fixture(scope="session")
def vorta_comfy(comfy):
    """Our pack's ComfyUI adapter (install, plan, override), imported as the installed package ``comfyui_vorta``."""
    from comfyui_vorta.vorta.comfy import install, override, plan, preview

    return types.SimpleNamespace(apply_vorta=install.apply_vorta, find_patch=install.find_patch,
                                 RouterBundle=plan.RouterBundle, TAG=override.TAG, STATE=override.STATE,
                                 preview_table=preview.preview_table)
