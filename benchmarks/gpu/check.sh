#!/usr/bin/env bash
# The GPU check in one call, from the repository root on a machine with one CUDA GPU:
#   bash benchmarks/gpu/check.sh [OFFICIAL_CLONE] [extra options of python -m benchmarks.gpu]
# Writes benchmarks/results/gpu/<device>.md and .json; with $OUT set (the device tool) it copies
# them there too, whatever happened to the run.
set -u
cd "$(dirname "$0")/../.."
official="${1:-.official/pid_diffusion}"
shift || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -m benchmarks.gpu --official "$official" "$@"
status=$?
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu/*.md benchmarks/results/gpu/*.json "$OUT"/ 2>/dev/null
fi
exit $status
