#!/usr/bin/env bash
# On a lent GPU machine (Python 3.12 with torch, nothing reachable): install the wheels that
# `make device-kit` put in .whl/, then run the GPU check against the hosted code in .ref/.
#   device run, carrying .whl and .ref:  bash tools/gpu-session.sh [gpucheck options, e.g. --skip compile]
# Output: $OUT/gpu-check.json, $OUT/log.txt and a few images (within the device's 8 files).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check-results}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/log.txt"
python3 -m iclight.gpucheck "$out" --reference .ref --weights /tmp/gpucheck-weights "$@" 2>&1 | tee -a "$out/log.txt"
