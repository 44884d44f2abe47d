#!/usr/bin/env bash
# The CUDA path end to end (see bench/gpu_check.py); on a GPU machine: bash bench/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-artifacts/gpu_check}}
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
timeout 480 "$python" bench/gpu_check.py --out "$out" "${@:2}" 2>&1 | tee "$out/gpu_check.log"
