#!/usr/bin/env bash
# Build the git-ignored payload that bench/run_e2e_device.sh needs on the device (carry [".comfyui", ".whl"]):
#   .comfyui/  ComfyUI's source (library path only: no .git, tests, API nodes or tokenizer data), ~5 MB
#   .whl/      wheels the device image lacks: torchsde + trampoline (ComfyUI's sampler imports them)
# Usage: bash bench/prepare_device_payload.sh /path/to/ComfyUI   (tested with ComfyUI 0.3.64 and 0.33.0)
# ComfyUI >= 0.7 also needs comfy-kitchen, comfy-aimdo, simpleeval and blake3 wheels: see the 0.33.0 results file
# (bench/results/2026-11-24-comfyui-0.33-h100.md) for how the comfy-kitchen wheel is cut under the carry limit.
set -euo pipefail
src=$(cd "${1:?path to a ComfyUI checkout}" && pwd)
cd "$(dirname "$0")/.."
rm -rf .comfyui && mkdir .comfyui
( cd "$src" && find . -type f \
    -not -path './.git/*' -not -path './tests/*' -not -path './tests-unit/*' -not -path './comfy_api_nodes/*' \
    -not -path '*/__pycache__/*' -not -path './output/*' -not -path './input/*' -not -path './models/*' \
    -not -path './comfy/text_encoders/*_tokenizer/*' -not -name '*.safetensors' -not -name '*.ckpt' -print0 ) |
  (cd "$src" && xargs -0 tar cf -) | tar xf - -C .comfyui
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform any -d .whl torchsde==0.2.6 trampoline==0.1.2
git check-ignore .comfyui .whl >/dev/null && du -sh .comfyui .whl
