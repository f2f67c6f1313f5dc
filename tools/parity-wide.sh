#!/usr/bin/env bash
# Parity with the hosted code over the cases a review checks (tools/parity_cases.py), on the CPU
# in float32 with the parity kit's tiny weights. Needs .ref/ (make device-kit). About 3 min here.
#   bash tools/parity-wide.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
kit=../shared/parity
py=.venv/bin/python
work="${1:-$(mktemp -d)}"
weights="${ICLIGHT_PARITY_WEIGHTS:-/tmp/iclight-parity-weights}"
mkdir -p "$work/images"
cp "$kit"/images/* "$work/images/"
PYTHONPATH=. "$py" tools/parity_cases.py "$kit/cases.json" >"$work/cases.json"
[ -f "$weights/iclight_sd15_fbc.safetensors" ] || "$py" "$kit/make_weights.py" "$weights" --size tiny >/dev/null
"$py" .ref/ref_run.py .ref "$weights" "$work/cases.json" "$work/hosted" >"$work/hosted.log"
ICLIGHT_WEIGHTS_DIR="$weights" ICLIGHT_DEVICE=cpu "$py" "$kit/project_run.py" "$work/cases.json" "$work/ours" >"$work/ours.log"
"$py" "$kit/compare.py" "$work/hosted" "$work/ours" "$work/cases.json"
