#!/usr/bin/env bash
# Refresh requirements/lock.txt: install the newest versions pyproject.toml's ranges allow into a
# fresh virtual environment, run the whole test suite on them, and only if it passes write their
# exact versions (every transitive dependency, torch included) to requirements/lock.txt.
#   bash scripts/lock.sh            # then review `git diff requirements/lock.txt` and commit it
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/flipguard-lock.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
"$venv/bin/python" -m pytest tests -q
{
  echo "# The exact versions the test suite passed on (scripts/lock.sh, $(date -u +%Y-%m-%d), $("$venv/bin/python" --version))."
  echo "# Installed by scripts/setup.sh as constraints: pip install -c requirements/lock.txt -e .[test]"
  "$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^-e ' | sort -f
} > requirements/lock.txt.new
mv requirements/lock.txt.new requirements/lock.txt
echo "requirements/lock.txt refreshed: $(grep -vc '^#' requirements/lock.txt) packages"
