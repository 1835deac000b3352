#!/usr/bin/env bash
# Lint and test: installs requirements.txt and tests/requirements.txt if anything is missing,
# runs ruff, then pytest (extra arguments go to pytest, e.g. `bash tests/run.sh -k resume`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-$(command -v python || command -v python3)}"

if ! "$python" -m utils.core.requirements requirements.txt tests/requirements.txt; then
    "$python" -m pip install -q -r requirements.txt -r tests/requirements.txt
fi
"$python" -m ruff check .
"$python" -m pytest -q "$@"
