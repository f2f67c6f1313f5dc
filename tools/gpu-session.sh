#!/usr/bin/env bash
# On a lent GPU machine (Python 3.12 with torch, nothing reachable): install the wheels that
# `make device-kit` put in .whl/, then run the GPU check against the hosted code in .ref/.
#   device run, carrying .whl and .ref:  bash tools/gpu-session.sh [gpucheck options, e.g. --skip compile]
# Output: $OUT/gpu-check.json (saved after every section), $OUT/log.txt and a few images (within the
# device's 8 files). BUDGET (default 520 s; give the device run timeout_s 590): optional sections
# that would start later are skipped. The stand-in weights and the compile cache beside them stay in
# the checkout's git-ignored gpucheck-weights/, which the device keeps between calls while the
# machine is warm: a follow-up call (--skip everything done) reuses both.
# Dry run here, in a Python 3.12 venv holding the device's torch and transformers:
#   PYTHON=/tmp/devsim/bin/python SITE=/tmp/devsim-site bash tools/gpu-session.sh --device cpu --quick
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check-results}"
python="${PYTHON:-python3}"
site="${SITE:-/tmp/site}"
mkdir -p "$out"
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/log.txt"
else
	echo "no nvidia-smi" | tee "$out/log.txt"
fi
"$python" -m iclight.gpucheck "$out" --reference .ref --weights "${WEIGHTS:-$PWD/gpucheck-weights}" \
	--budget "${BUDGET:-520}" "$@" 2>&1 | tee -a "$out/log.txt"
