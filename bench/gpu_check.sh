#!/usr/bin/env bash
# One command for a CUDA machine: every entry script for a few iterations on a synthetic CIFAR-10, in
# float32 and bf16 (images/s, peak GPU memory, bf16/fp32 speed ratio), plus a 2-GPU torchrun smoke run
# when there are two or more devices. Without CUDA it prints one line and exits 0.
# Extra arguments go to bench/gpu_check.py (e.g. --amp-modes off,bf16,fp16, --scripts TOD, --keep;
# --device cpu --quick is the CPU dry run). See bench/gpu_check.py's docstring for what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" bench/gpu_check.py "$@"
