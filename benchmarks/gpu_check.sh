#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a CUDA machine and keep its output in one folder (docs/gpu.md):
#   OUT=gpu_check_out bash benchmarks/gpu_check.sh [gpu_check.py options]
# writes $OUT/gpu_check.json, $OUT/throughput_rows.csv and $OUT/gpu_check.log; back on the project's machine,
#   PYTHONPATH=src python benchmarks/gpu_check.py --merge $OUT/gpu_check.json
# appends the rows to benchmarks/throughput.csv (where a run on your own GPU machine has already put them).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "${PYTHON:-python3}" benchmarks/gpu_check.py \
    --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
