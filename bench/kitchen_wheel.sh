#!/usr/bin/env bash
# Put comfy-kitchen's wheel into .whl/ (git-ignored, carried to the device) for kernel_bench.py's kitchen rows,
# without its AMD (hip) backend: the whole 0.2.40 wheel (~68 MB) is over the 64 MiB a device call can carry.
# Usage: bash bench/kitchen_wheel.sh [VERSION]   (default 0.2.40); keeps one comfy-kitchen wheel in .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-0.2.40}
py=${PYTHON:-python3}
mkdir -p .whl
rm -f .whl/comfy_kitchen-*.whl
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "comfy-kitchen==$version"
ck=$(ls "$PWD"/.whl/comfy_kitchen-*.whl)
t=$(mktemp -d)
(cd "$t" && unzip -q "$ck" && rm -rf comfy_kitchen/backends/hip &&
  sed -i '/comfy_kitchen\/backends\/hip\//d' comfy_kitchen-*.dist-info/RECORD && rm "$ck" &&
  zip -q -r -9 "$ck" comfy_kitchen comfy_kitchen-*.dist-info)
rm -rf "$t"
git check-ignore -q .whl && du -h "$ck"
