"""How far the time-embedding fingerprint (``vorta.calibration_file.time_fingerprint``) moves for the same model in
other precisions, and for other models: the numbers behind ``SAME_MODEL_SIMILARITY`` (0.95).

    PYTHONPATH=<folder holding comfyui_vorta> python bench/fingerprint_margins.py

Random-weight time MLPs of Wan's form (sinusoid 256 -> dim -> dim), not real checkpoints (none reachable offline)."""
from __future__ import annotations

import torch
import torch.nn as nn

from comfyui_vorta.vorta.calibration_file import SAME_MODEL_SIMILARITY, fingerprint_similarity, time_fingerprint


def time_mlp(seed: int, dim: int = 256) -> nn.Module:  # as tests/test_calibration_fit.py
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.05)
    return m


def changed(fn) -> nn.Module:
    """The seed-0 MLP with ``fn`` applied to every weight."""
    m = time_mlp(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(fn(p))
    return m


def round_to_bits(bits: int, block: int = 32):
    def fn(p):
        f = p.reshape(-1, block) if p.numel() % block == 0 else p.reshape(1, -1)
        s = f.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
        return (torch.round(f / s) * s).reshape(p.shape)
    return fn


def main() -> None:
    ref = time_fingerprint("wan", time_mlp(0))
    g = torch.Generator().manual_seed(1)
    cases = {"bf16": time_mlp(0).to(torch.bfloat16), "fp16": time_mlp(0).half(),
             "fp8 e4m3 values": changed(lambda p: p.to(torch.float8_e4m3fn).float()),
             **{f"{b}-bit round-to-nearest (blocks of 32)": changed(round_to_bits(b)) for b in (4, 3, 2)},
             "weights + 30 % noise": changed(lambda p: p + torch.randn(p.shape, generator=g) * 0.05 * 0.3),
             **{f"other model (seed {s})": time_mlp(s) for s in (1, 2, 3)}}
    print(f"| time MLP | similarity to the seed-0 model (refused below {SAME_MODEL_SIMILARITY}) |\n|---|---|")
    for name, m in cases.items():
        print(f"| {name} | {fingerprint_similarity(ref, time_fingerprint('wan', m)):.4f} |")


if __name__ == "__main__":
    main()
