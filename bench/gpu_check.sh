#!/usr/bin/env bash
# One command for a CUDA machine: every entry script on a synthetic CIFAR-10, in float32 and bf16 (plus fp16 and
# channels-last rows for main_TOD.py): training images/s over timed windows of at least 10 s, peak GPU memory,
# speed ratios and host syncs per step, in one summary table (gpu_check_summary.md); a 2-GPU torchrun smoke run
# when there are two or more devices (skipped with a line on one). Without CUDA it prints one line and exits 0.
# The Python is $PYTHON, else the first of python, python3 that imports torch (tensorboardX is not needed).
# Extra arguments go to bench/gpu_check.py (e.g. --amp-modes off,bf16,fp16, --scripts TOD, --keep, --summary PATH;
# --device cpu --quick is the CPU dry run). See bench/gpu_check.py's docstring for what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in python python3; do
        if command -v "$candidate" > /dev/null 2>&1 && "$candidate" -c "import torch" > /dev/null 2>&1; then
            python="$candidate"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "gpu_check: neither python nor python3 here imports torch; set PYTHON=/path/to/python" >&2
    exit 1
fi
exec "$python" bench/gpu_check.py "$@"
