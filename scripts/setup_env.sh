#!/usr/bin/env bash
# Create .venv (if missing) with the app, training and test dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: the local CPU build; an unpinned torch would pull CUDA wheels
# constraints.txt: the tested version of every runtime package (an untested PySide6 release crashed the app)
python -m pip install -q -c constraints.txt "torch==2.13.0"
python -m pip install -q -c constraints.txt -e ".[train,test]"
# compile the tail's numba loops once into their on-disk cache (engine/geometry/__pycache__), so the first
# aligned face of the first app run does not wait for the compiler
python -c "from engine.visibility import warm_up_compiled_tail; warm_up_compiled_tail()"
