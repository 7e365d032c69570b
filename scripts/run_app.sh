#!/usr/bin/env bash
# Start FaceAlign Studio, setting up .venv on first use: bash scripts/run_app.sh [--source PATH|CAMERA_INDEX]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
exec python main.py "$@"
