#!/usr/bin/env bash
# gpu-check on a CUDA machine without a package index: `bash benchmarks/run-gpu.sh check`.
exec bash "$(dirname "$0")/run-gpu.sh" check "$@"
