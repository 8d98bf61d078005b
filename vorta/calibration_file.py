"""What a calibrated router file records beside its weights, and the checks that use it.

A calibrated router is saved in our ``.safetensors`` router format (``router_files.save_safetensors``: official key
names, family/dims/sparse-settings metadata), so the existing loader and Apply VORTA read it unchanged.  The extra
metadata (all strings, JSON where structured) says where it came from and what it measured:

* ``calibrated`` = ``"1"``, ``calibration_version``, ``pack_version``, ``model`` (the model file calibrated on);
* the knob ``max_error`` and the metric (``error_metric``), the sampled share of query tiles ``sample_fraction``;
* the run: ``sampler``, ``scheduler`` (a ComfyUI scheduler name when the SIGMAS match one, else ``custom``),
  ``steps``, ``shift``, ``cfg``, ``seed``, ``sigmas`` (JSON);
* the sigma range it serves: ``sigma_max`` / ``sigma_min`` (the calibrated steps) and ``expert`` (``all``, or the
  high-/low-noise part of the schedule for two-expert models such as Wan 2.2 A14B);
* ``calibration_t`` (JSON timesteps), ``calibration_decisions`` (the rule's decisions per calibrated step, one
  digit per (layer, head), steps separated by ``,``) and ``calibration_errors`` (the measured errors, fp16,
  zlib + base64, shape in ``calibration_errors_shape``) -- enough to re-check the router on any model and to
  choose another knob without sampling again;
* ``step_stats`` (JSON, per calibrated step: errors per branch and the decisions' shares) and ``fit`` (JSON).
"""
from __future__ import annotations

import base64
import json
import pathlib
import re
import zlib
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from .router import OFFICIAL_TAU_SPARSE, RouterSet
from .router_files import RouterFileError
from .timestep import router_input

CALIBRATION_VERSION = "1"
ERROR_METRIC = ("relative L2 of each head's attention output against full attention, pooled over the CFG batch, "
                "every latent and a sample of query tiles, per timestep")


def pack_version() -> str:
    """The pack's version from its pyproject.toml ('unknown' when the file is not beside the package)."""
    try:
        text = (pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    except OSError:  # pragma: no cover - an install without pyproject.toml
        return "unknown"
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else "unknown"


def encode_decisions(decisions: torch.Tensor) -> str:
    """(steps, layers, heads) 0/1/2 -> '0121...,2210...' (one digit per (layer, head), steps by commas)."""
    return ",".join("".join(str(int(x)) for x in row.reshape(-1).tolist()) for row in decisions)


def decode_decisions(text: str, layers: int, heads: int) -> torch.Tensor:
    rows = [r for r in text.split(",") if r]
    if any(len(r) != layers * heads or set(r) - set("012") for r in rows):
        raise ValueError(f"calibration_decisions must hold {layers * heads} digits 0-2 per step")
    return torch.tensor([[int(c) for c in r] for r in rows], dtype=torch.long).view(len(rows), layers, heads)


def encode_errors(errors: torch.Tensor) -> str:
    """fp16 bytes, zlib, base64 (NaN and inf survive fp16)."""
    raw = errors.to(torch.float16).contiguous().numpy().tobytes()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode_errors(text: str, shape) -> torch.Tensor:
    import numpy as np

    raw = zlib.decompress(base64.b64decode(text))
    return torch.from_numpy(np.frombuffer(raw, dtype=np.float16).copy()).view(*shape).double()


@dataclass
class CalibrationInfo:
    """The calibration a router file records (None from ``from_metadata`` for other router files)."""

    t: torch.Tensor  # (N,) calibrated timesteps
    decisions: torch.Tensor  # (N, layers, heads)
    sigma_max: float
    sigma_min: float
    max_error: float
    model: str = ""
    expert: str = "all"
    errors: Optional[torch.Tensor] = None  # (N, layers, heads, 3) when recorded
    fingerprint: Optional[torch.Tensor] = None  # time_fingerprint of the model calibrated on, when recorded

    @classmethod
    def from_metadata(cls, meta: Dict[str, str], layers: int, heads: int, source: str = "router") -> Optional["CalibrationInfo"]:
        if meta.get("calibrated") != "1":
            return None
        try:
            t = torch.tensor(json.loads(meta["calibration_t"]), dtype=torch.float64)
            dec = decode_decisions(meta["calibration_decisions"], layers, heads)
            if dec.shape[0] != t.numel():
                raise ValueError(f"{dec.shape[0]} steps of decisions for {t.numel()} timesteps")
            errors = None
            if "calibration_errors" in meta:
                shape = json.loads(meta["calibration_errors_shape"])
                errors = decode_errors(meta["calibration_errors"], shape)
            fingerprint = None
            if "time_fingerprint" in meta:
                fingerprint = torch.tensor(json.loads(meta["time_fingerprint"]), dtype=torch.float64)
                if fingerprint.shape != (len(FINGERPRINT_T), FINGERPRINT_WIDTH):
                    raise ValueError(f"time_fingerprint of shape {tuple(fingerprint.shape)}")
            return cls(t, dec, float(meta["sigma_max"]), float(meta["sigma_min"]), float(meta["max_error"]),
                       meta.get("model", ""), meta.get("expert", "all"), errors, fingerprint)
        except (KeyError, ValueError, TypeError, zlib.error, json.JSONDecodeError, RuntimeError) as e:
            raise RouterFileError(f"{source}: calibration metadata is damaged ({type(e).__name__}: {e}); calibrate "
                                  "again with VORTA Calibrate Router") from None


FINGERPRINT_T = (0.0, 250.0, 500.0, 750.0, 999.0)
FINGERPRINT_WIDTH = 16
# below: another model's time embedding (bench/fingerprint_margins.py on test models: bf16/fp16/fp8 copies of one
# model > 0.998, 4-bit round-to-nearest weights 0.97, 3-bit 0.90; other models and a 30 % weight change below)
SAME_MODEL_SIMILARITY = 0.95


def time_fingerprint(family: str, time_mlp, device=None) -> torch.Tensor:
    """(5, 16): the router input at five timesteps through 16 fixed +-1 projections (``_projection``), 80 numbers.

    Why: the routers read the model's time embedding, so that is what identifies "the model it was calibrated on";
    decisions alone cannot (a head whose branch does not change with t reproduces on any model)."""
    if device is None:  # the weights' device
        device = next((p.device for p in time_mlp.parameters()), None)
    feats = torch.cat([router_input(family, time_mlp, torch.tensor([t], device=device)).double().cpu()
                       for t in FINGERPRINT_T])
    return feats @ _projection(feats.shape[1])


def _projection(n: int) -> torch.Tensor:
    """(n, FINGERPRINT_WIDTH) pseudo-random +-1 signs from integer arithmetic only: the same on every platform and
    torch version (a random-number generator's stream may change between releases; every stored fingerprint would)."""
    p = 2147483629  # prime < 2**31, so h * h fits in int64
    i = torch.arange(n, dtype=torch.int64)[:, None]
    j = torch.arange(FINGERPRINT_WIDTH, dtype=torch.int64)[None, :]
    h = (i * 48271 + j * 69621 + 12345) % p
    for c in (11, 13, 17):  # three rounds of squaring modulo p mix the small products
        h = (h * h + c) % p
    return torch.where((h >> 15) % 2 == 0, 1.0, -1.0).double()


def fingerprint_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest cosine similarity of the two fingerprints' rows (1.0: the same time embedding)."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).min())


def reproduced_share(routers: RouterSet, info: CalibrationInfo, family: str, time_mlp,
                     tau_sparse: float = OFFICIAL_TAU_SPARSE, device=None) -> float:
    """Share of the recorded (step, layer, head) decisions these routers make on *this* model's time embedding.

    Why: the routers read the model's own time embedding, so a router calibrated on another model with the same
    dimensions (another fine-tune, the other expert of a two-expert model) gives other decisions, silently.  On the
    model it was calibrated on the share is 1.0 (also in fp8 or with TF32 matmuls, as the fit keeps margins)."""
    r = routers.to(device)
    got = torch.stack([r.decide(router_input(family, time_mlp, torch.tensor([float(t)], device=device)), tau_sparse)
                       .cpu() for t in info.t])
    return float((got == info.decisions).double().mean())


def check_reproduces(routers: RouterSet, info: CalibrationInfo, family: str, time_mlp, source: str = "router",
                     device=None, refuse_below: float = 0.9) -> float:
    """``reproduced_share``, raising ``RouterFileError`` (another model's calibration) where the recorded time
    fingerprint differs from this model's or the share is below ``refuse_below``."""
    if info.fingerprint is not None:
        similarity = fingerprint_similarity(info.fingerprint, time_fingerprint(family, time_mlp, device))
        if not similarity >= SAME_MODEL_SIMILARITY:
            raise RouterFileError(
                f"{source} was calibrated on {info.model or 'another model'}: this model's time embedding, which the "
                f"routers read, differs from that model's (similarity {similarity:.3f}, the same model scores "
                f">= {SAME_MODEL_SIMILARITY}). Calibrate this model with VORTA Calibrate Router, or load the router "
                "made for it.")
    share = reproduced_share(routers, info, family, time_mlp, device=device)
    if share < refuse_below:
        raise RouterFileError(
            f"{source} was calibrated on {info.model or 'another model'}: on this model it reproduces only "
            f"{share:.0%} of its calibrated decisions (its routers read the model's own time embedding, which "
            "differs). Calibrate this model with VORTA Calibrate Router, or load the router made for it.")
    return share
