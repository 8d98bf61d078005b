#!/usr/bin/env bash
# End-to-end benchmark (issue 5) on the device, in one call. Carry: .comfyui (ComfyUI's source, git-ignored) and
# .whl (torchsde + trampoline, which ComfyUI's sampler imports and the device image lacks).
#   bash bench/run_e2e_device.sh [models, default wan1.3b,wan14b,hunyuan,wan5b] [extra e2e.py args...]
#   bash bench/run_e2e_device.sh --model wan14b --configs dense,mix --stacks bf16:triton,fp8_e4m3fn_fast:triton
# (when the first argument is an option, every argument goes to e2e.py and the models come from its --model)
# Writes $OUT/e2e.md (rewritten after each model, so a cut-off run still returns what finished) and $OUT/e2e.log.
set -uo pipefail
OUT=${OUT:-/tmp/e2e_out}
mkdir -p "$OUT"
E2E_COMMAND="bash bench/run_e2e_device.sh${*:+ $*}"
[ -n "${E2E_TIME_LIMIT:-}" ] && E2E_COMMAND="E2E_TIME_LIMIT=$E2E_TIME_LIMIT $E2E_COMMAND"
export E2E_COMMAND
models=wan1.3b,wan14b,hunyuan,wan5b
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  models=$1
  shift
fi
limit=${E2E_TIME_LIMIT:-500}  # seconds for the python process; the device command may run 600

source "$(dirname "$0")/device_env.sh"
python3 bench/e2e.py --model "$models" --time-limit "$limit" --md "$OUT/e2e.md" "$@" 2>&1 | tee "$OUT/e2e.log"
