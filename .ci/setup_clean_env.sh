#!/usr/bin/env bash
# A venv with only torch, transformers and pillow (transformers' `vision` extra: a processor
# that takes images needs an image library), at the lock's versions: where a saved student
# must load without this toolkit (tests/test_portable_student.py, `-m portable`, with
# DISTILL_CLEAN_PYTHON=.venv-clean/bin/python). torch comes as everywhere here: `pip install
# torch==2.13.0` takes the local CPU wheel. Idempotent: kept while constraints.txt is unchanged.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CLEAN_VENV:-$ROOT/.venv-clean}
PYTHON=${PYTHON:-python3.11}
STAMP="$VENV/.built-$(sha256sum "$ROOT/constraints.txt" | cut -c1-12)"

if [ -f "$STAMP" ]; then
  echo "clean env ready: $VENV"
  exit 0
fi
pinned() { grep -E "^$1==" "$ROOT/constraints.txt" | head -1 | sed 's/+cpu$//'; }
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
  "$(pinned torch)" "$(pinned transformers)" "$(pinned pillow)"
if "$VENV/bin/python" -I -c "import distill" 2>/dev/null; then
  echo "the clean env can import distill" >&2
  exit 1
fi
touch "$STAMP"
"$VENV/bin/python" -m pip list --disable-pip-version-check --format=freeze | tr '\n' ' '
echo
