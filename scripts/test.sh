#!/usr/bin/env bash
# Install everything into .venv (from requirements/lock.txt) and run the test suite (unit, functional,
# docs). The browser checks of the HTML report and the docs site need Debian's chromium: installed
# here when this user may (root with apt-get), else those tests skip and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || echo "note: could not install chromium; the browser tests will skip"
fi
.venv/bin/python -m pytest tests -q "$@"
