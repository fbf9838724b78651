#!/usr/bin/env bash
# Build the separate environment for the `@pytest.mark.lmms` tests: lmms-eval 0.7.3 plus this
# project (installed, so lmms-eval finds our SiQ-VL adapter through the `lmms_eval.models`
# entry point). lmms-eval pulls torchvision, opencv, wandb, sentence-transformers and much
# else that the main venv must not carry; the tests that need it run only here
# (`.venv-lmms/bin/python -m pytest -m lmms`).
#
# Idempotent: an existing, working environment is kept.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LMMS_VENV:-$ROOT/.venv-lmms}
PYTHON=${PYTHON:-python3.11}
LOCK="$ROOT/.ci/lmms-lock.txt"
STAMP="$VENV/.built-$(cat "$ROOT/pyproject.toml" "$LOCK" | sha256sum | cut -c1-12)"

ready() {
  (cd "$ROOT" && "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md, lmms_eval, pytest, distill, tests.train_support
from lmms_eval.models import get_model
assert any(ep.name == "siqvl" for ep in md.entry_points(group="lmms_eval.models"))
PY
  )
}

if [ -f "$STAMP" ] && ready; then
  echo "lmms env ready: $VENV"
  exit 0
fi

started=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# The CPU torch first (the main lock's), so nothing pulls a CUDA build; then the project with
# its `lmms` extra, every version from the env's lock (torchvision 0.28 matches torch 2.13).
"${PIP[@]}" install -q -c "$LOCK" torch
"${PIP[@]}" install -q -c "$LOCK" -e "$ROOT[dev,lmms]"
# PyPI's torchvision is built against the CUDA torch and does not load beside the CPU wheel
# ('operator torchvision::nms does not exist'); lmms-eval's core (evaluator, tasks, the chat
# model API) never imports it, and transformers skips it when it is absent.
"${PIP[@]}" uninstall -y -q torchvision
# latex2sympy2 (an lmms-eval dependency) installs its own test files as a top-level package
# named `tests`, which would shadow this repository's tests/ (a namespace package).
rm -rf "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/tests"
ready
touch "$STAMP"
echo "lmms env ready in $VENV ($(( $(date +%s) - started )) s to build)"
