#!/usr/bin/env bash
# gpu-quick or gpu-check on a CUDA machine that has Python 3.12 and torch but no package index:
# install the wheels of `make gpu-wheels` (.whl/, where there is one) into a side folder, then run
# the check against the hosted code in .ref/ (`make reference`, where it is exported).
#   bash benchmarks/run-gpu.sh quick [gpuquick options]     (make gpu-quick)
#   bash benchmarks/run-gpu.sh check [gpucheck options, e.g. --skip compile]
# Output in $OUT (default gpu-quick-results/ or gpu-check-results/): the report (saved after every
# section), log.txt and a few images. TIME_LIMIT (default 330 s for quick, 520 s for check): what
# would start later is skipped, and a compile still running then is stopped (check). The stand-in
# weights stay in the git-ignored gpucheck-weights/ (or $WEIGHTS), so a second run on the same
# machine reuses them (and check's compile cache). PYTHON and SITE choose the interpreter and the
# side folder (defaults python3 and /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
check="${1:?usage: bash benchmarks/run-gpu.sh quick|check [options]}"
shift
case "$check" in
quick) limit=330 ;;
check) limit=520 ;;
*) echo "run-gpu.sh: quick or check, not $check" >&2; exit 2 ;;
esac
out="${OUT:-gpu-$check-results}"
python="${PYTHON:-python3}"
site="${SITE:-/tmp/site}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
	"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
	export PYTHONPATH="$site:$PWD"
fi
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/log.txt"
else
	echo "no nvidia-smi" | tee "$out/log.txt"
fi
args=(--weights "${WEIGHTS:-$PWD/gpucheck-weights}" --time-limit "${TIME_LIMIT:-$limit}")
[ -f .ref/ref_run.py ] && args+=(--reference .ref)
"$python" -m "benchmarks.gpu$check" "$out" "${args[@]}" "$@" 2>&1 | tee -a "$out/log.txt"
