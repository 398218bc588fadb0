#!/usr/bin/env bash
# Validate the infrastructure: the offline template tests always; with a Bicep CLI also
# `bicep build` (main.bicep and main.bicepparam), `bicep lint`, and the template tests run
# again on the compiled main.bicep.
#
#   bash infra/validate.sh
#
# Bicep comes from `az bicep install` (into ~/.azure/bin) or a standalone install; it is a
# GitHub/NuGet download, so CI machines here (PyPI, npm and Debian only) have none and run the
# offline tests on infra/main.json only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${PYTHON:-}" ]; then py=$PYTHON          # an interpreter with requirements-dev.txt
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi

if [ -z "${BICEP:-}" ]; then
  if command -v bicep >/dev/null 2>&1; then
    BICEP=$(command -v bicep)
  elif [ -x "$HOME/.azure/bin/bicep" ]; then
    BICEP=$HOME/.azure/bin/bicep
  fi
fi

if [ -n "${BICEP:-}" ]; then
  export BICEP
  echo "bicep: $("$BICEP" --version)"
  "$BICEP" build infra/main.bicep --stdout >/dev/null
  "$BICEP" build-params infra/main.bicepparam --stdout >/dev/null
  "$BICEP" lint infra/main.bicep
else
  echo "no Bicep CLI (install: az bicep install): testing infra/main.json only"
fi

"$py" -m pytest -q tests/test_infra.py tests/test_workbook.py
