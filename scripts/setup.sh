#!/usr/bin/env bash
# Create (or reuse) .venv at the repo root and install FlipGuard with every extra into it, at the
# exact versions of requirements/lock.txt (the set the test suite ran on; scripts/lock.sh refreshes it).
# torch is installed first and pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements/lock.txt -e ".[test]"
