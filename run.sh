#!/usr/bin/env bash
# The main job: TOD active learning (Huang et al., ICCV'21), TOD sampling + the COD loss.
# CIFAR-10 when ./data/cifar-10-batches-py exists, otherwise the built-in digits dataset.
# Extra arguments go to main_TOD.py, e.g. `bash run.sh --out results/my_run`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(command -v python || command -v python3)}"

if [ -d ./data/cifar-10-batches-py ]; then
    config=cifar10
    echo "run.sh: TOD (--sampling TOD --auxiliary TOD) on CIFAR-10 from ./data/cifar-10-batches-py"
else
    config=digits
    echo "run.sh: TOD (--sampling TOD --auxiliary TOD) on the built-in digits dataset (no ./data/cifar-10-batches-py here)"
fi

if ! (cd "$here" && "$python" -m utils.core.requirements requirements.txt >/dev/null); then
    echo "run.sh: installing requirements.txt into $python"
    "$python" -m pip install -q -r "$here/requirements.txt"
fi

exec "$python" "$here/main_TOD.py" --config "$config" --sampling TOD --auxiliary TOD "$@"
