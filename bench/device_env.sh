#!/usr/bin/env bash
# Sourced by the device runners (run_e2e_device.sh, run_calibrate_device.sh): installs the carried wheels, writes
# import-only stubs for packages the device image lacks, and exports PYTHONPATH / COMFYUI_PATH. Needs .comfyui
# (a ComfyUI source tree, bench/prepare_device_payload.sh) and optionally .whl carried with the working tree.
[ -f .comfyui/comfy/sd.py ] || { echo "no .comfyui/: carry it (a ComfyUI source tree: bench/prepare_device_payload.sh)"; exit 2; }
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
mkdir -p /tmp/pkg /tmp/stubs && ln -sfn "$PWD" /tmp/pkg/comfyui_vorta
# import-only stubs, written only for packages the device lacks (nothing here calls them):
# torchvision (ComfyUI's model_base imports it), av (comfy_api's video types, imported by our node module)
if ! python3 -c "import torchvision" 2>/dev/null; then
  mkdir -p /tmp/stubs/torchvision
  printf 'from . import transforms  # noqa\n__version__ = "0.0.0+stub"\ndef __getattr__(name):\n    raise AttributeError(f"torchvision stub: {name}")\n' > /tmp/stubs/torchvision/__init__.py
  printf 'def __getattr__(name):\n    raise AttributeError(f"torchvision.transforms stub: {name}")\n' > /tmp/stubs/torchvision/transforms.py
  echo "torchvision: import-only stub"
fi
if ! python3 -c "import av" 2>/dev/null; then
  mkdir -p /tmp/stubs/av/container /tmp/stubs/av/subtitles
  printf 'def open(*a, **k):\n    raise RuntimeError("av stub: video files are not available in the benchmark")\n' > /tmp/stubs/av/__init__.py
  printf 'class InputContainer: pass\n' > /tmp/stubs/av/container/__init__.py
  : > /tmp/stubs/av/subtitles/__init__.py
  printf 'class SubtitleStream: pass\n' > /tmp/stubs/av/subtitles/stream.py
  mkdir -p /tmp/stubs/av/video && : > /tmp/stubs/av/video/__init__.py  # ComfyUI >= 0.2x imports the enums below
  printf 'import enum\nclass ColorPrimaries(enum.IntEnum):\n    BT709 = 1\n    BT2020 = 9\nclass ColorRange(enum.IntEnum):\n    UNSPECIFIED = 0\n    MPEG = 1\n    JPEG = 2\nclass ColorTrc(enum.IntEnum):\n    BT709 = 1\n    IEC61966_2_1 = 13\n    SMPTE2084 = 16\n    ARIB_STD_B67 = 18\n' > /tmp/stubs/av/video/reformatter.py
  echo "av: import-only stub"
fi
export PYTHONPATH=/tmp/pkg:/tmp/site:/tmp/stubs${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 COMFYUI_PATH=$PWD/.comfyui
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader || true
