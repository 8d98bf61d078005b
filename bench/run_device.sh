#!/usr/bin/env bash
# One device call: GPU kernel tests (bf16 included) then the kernel benchmark. Usage on the device:
#   bash bench/run_device.sh [benchmark args...]      (VORTA_SKIP_TESTS=1: the benchmark only)
# Carried wheels in .whl/ are installed first (comfy-kitchen for the kitchen rows: bench/kitchen_wheel.sh).
set -uo pipefail
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/comfyui_vorta
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
[ "${VORTA_SKIP_TESTS:-0}" = 1 ] || python3 -m pytest -q -p no:cacheprovider --tb=line tests/test_kernels.py tests/test_reference.py tests/test_custom_ops.py tests/test_nonfinite.py tests/test_text_first.py tests/test_quant.py tests/test_autotune.py 2>&1 | grep -E "relative error|passed|failed|Error" | head -20
python3 bench/kernel_bench.py "$@"
