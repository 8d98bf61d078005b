#!/usr/bin/env bash
# Build the git-ignored payload that bench/run_e2e_device.sh needs on the device (carry [".comfyui", ".whl"]):
#   .comfyui/  ComfyUI's source (library path only: no .git, tests, API nodes or tokenizer data), ~5 MB
#   .whl/      wheels the device image lacks: torchsde + trampoline (ComfyUI's sampler imports them)
# Usage: bash bench/prepare_device_payload.sh /path/to/ComfyUI   (tested with ComfyUI 0.3.64 and 0.33.0)
# ComfyUI >= 0.7 also needs the comfy-kitchen, comfy-aimdo, simpleeval and blake3 wheels its requirements.txt pins;
# comfy-kitchen's wheel (~58 MB) is rebuilt without its AMD (hip) backend to stay under the 64 MiB carry limit.
set -euo pipefail
src=$(cd "${1:?path to a ComfyUI checkout}" && pwd)
cd "$(dirname "$0")/.."
rm -rf .comfyui && mkdir .comfyui
( cd "$src" && find . -type f \
    -not -path './.git/*' -not -path './tests/*' -not -path './tests-unit/*' -not -path './comfy_api_nodes/*' \
    -not -path '*/__pycache__/*' -not -path './output/*' -not -path './input/*' -not -path './models/*' \
    -not -path './comfy/text_encoders/*_tokenizer/*' -not -name '*.safetensors' -not -name '*.ckpt' -print0 ) |
  (cd "$src" && xargs -0 tar cf -) | tar xf - -C .comfyui
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform any -d .whl torchsde==0.2.6 trampoline==0.1.2
pins=$(grep -E '^(comfy-kitchen|comfy-aimdo)==' "$src/requirements.txt" || true)
if [ -n "$pins" ]; then
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl $pins simpleeval blake3
  ck=$(ls "$PWD"/.whl/comfy_kitchen-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$ck" ]; then
    t=$(mktemp -d)
    (cd "$t" && unzip -q "$ck" && rm -rf comfy_kitchen/backends/hip &&
      sed -i '/comfy_kitchen\/backends\/hip\//d' comfy_kitchen-*.dist-info/RECORD && rm "$ck" &&
      zip -q -r -9 "$ck" comfy_kitchen comfy_kitchen-*.dist-info)
    rm -rf "$t"
  fi
fi
git check-ignore .comfyui .whl >/dev/null && du -sh .comfyui .whl
