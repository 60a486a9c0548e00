#!/usr/bin/env bash
# Developer/CI install: .venv with Python 3.12 and every extra the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for candidate in python3.12 "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/3.12"*/bin/python3.12)"; do
    [ -n "$candidate" ] || continue
    for exe in $candidate; do
      if "$exe" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        echo "$exe"; return 0
      fi
    done
  done
  return 1
}

PY="$(find_python)" || { echo "Python 3.12 not found (seldon-core needs >=3.12, MLServer <3.13)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[runtime,seldon,dev]"
.venv/bin/python -m pip check || true
