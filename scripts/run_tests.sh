#!/usr/bin/env bash
# The whole test suite, with its own set-up: bash scripts/run_tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
python -m pytest -q tests "$@"
