#!/usr/bin/env bash
# One device call for the 8-bit path: GPU kernel tests (bf16 and 8-bit), then bench/quant_bench.py. Usage on the device:
#   bash bench/run_quant_device.sh [quant_bench args...]
set -uo pipefail
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/comfyui_vorta
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider --tb=short -x tests/test_quant.py tests/test_kernels.py tests/test_custom_ops.py 2>&1 | tail -25
python3 bench/quant_bench.py "$@"
