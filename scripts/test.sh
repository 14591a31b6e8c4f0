#!/usr/bin/env bash
# Install everything into .venv and run the test suite (unit + functional).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest tests -q "$@"
