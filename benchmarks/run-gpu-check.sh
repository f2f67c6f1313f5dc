#!/usr/bin/env bash
# gpu-check on a CUDA machine that has Python 3.12 and torch but no package index: install the
# wheels of `make gpu-wheels` (.whl/) into a side folder, then run benchmarks/gpucheck.py against
# the hosted code in .ref/ (`make reference`).
#   bash benchmarks/run-gpu-check.sh [gpucheck options, e.g. --skip compile]
# Output in $OUT (default gpu-check-results/): gpu-check.json (saved after every section),
# log.txt and a few images. TIME_LIMIT (default 520 s): the optional sections that would start
# later are skipped and a compile still running then is stopped. The stand-in weights and their
# compile cache stay in the git-ignored gpucheck-weights/ (or $WEIGHTS), so a second run on the
# same machine (--skip what is done) reuses both.
# PYTHON and SITE choose the interpreter and the side folder (defaults python3 and /tmp/site).
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
"$python" -m benchmarks.gpucheck "$out" --reference .ref --weights "${WEIGHTS:-$PWD/gpucheck-weights}" \
	--time-limit "${TIME_LIMIT:-520}" "$@" 2>&1 | tee -a "$out/log.txt"
