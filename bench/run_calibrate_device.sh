#!/usr/bin/env bash
# Calibration cost (issue 14) on the device, in one call: a calibrated step's time and peak memory against a dense
# step, Wan2.1-14B 720p 81 frames and Wan2.2-5B 720p (random weights, real architectures). Carry: .comfyui and .whl
# (bench/prepare_device_payload.sh), as for run_e2e_device.sh.
#   bash bench/run_calibrate_device.sh [models, default wan14b,wan5b] [extra calibration_cost.py args...]
# Writes $OUT/calibrate.md (rewritten after each model) and $OUT/calibrate.log; prints one markdown table.
set -uo pipefail
OUT=${OUT:-/tmp/calibrate_out}
mkdir -p "$OUT"
models=${1:-wan14b,wan5b}
shift || true
source "$(dirname "$0")/device_env.sh"
python3 bench/calibration_cost.py --model "$models" --md "$OUT/calibrate.md" "$@" 2>&1 | tee "$OUT/calibrate.log"
