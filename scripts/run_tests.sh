#!/usr/bin/env bash
# The whole test suite, with its own set-up: bash scripts/run_tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
# the import layers written in pyproject.toml ([tool.importlinter]; docs/architecture.md): a second, fast gate
lint-imports --no-cache
python -m pytest -q tests "$@"
