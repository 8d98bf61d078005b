#!/usr/bin/env bash
# One device call: GPU kernel tests (bf16 included) then the kernel benchmark. Usage on the device:
#   bash bench/run_device.sh [benchmark args...]
set -uo pipefail
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/comfyui_vorta
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider --tb=line tests/test_kernels.py tests/test_reference.py tests/test_custom_ops.py 2>&1 | grep -E "relative error|passed|failed|Error" | head -20
python3 bench/kernel_bench.py "$@"
