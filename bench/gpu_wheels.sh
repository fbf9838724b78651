#!/usr/bin/env bash
# Download the wheels bench/gpu_throughput.sh installs on a GPU machine that has a CUDA
# torch but no package index: Liger (pure Python + Triton) and this project's pinned
# pure-Python dependencies (plus tokenizers/pydantic-core/hf-xet/regex binaries for
# CPython 3.12 x86_64, the last GPU image's Python). Into bench/wheels/ (git-ignored,
# ~30 MB): carry that folder with the run. PY_VERSION=3.11 for another image.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}  # needs numpy and scikit-learn (the project's venv has both)
mkdir -p bench/wheels
$PY -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "${PY_VERSION:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d bench/wheels \
  liger-kernel==0.8.5 transformers==5.23.0 tokenizers==0.23.3 safetensors==0.8.0 \
  huggingface-hub==2.4.0 hf-xet==1.8.0 httpx2==2.16.2 httpcore2==2.16.2 typer==0.29.2 \
  shellingham==1.5.4 regex==2026.11.19 tqdm==4.70.1 peft==0.21.2 accelerate==1.15.0 \
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
  jsonlines==4.0.0 click==8.4.2 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 \
  pygments==2.21.0
# What a CUDA torch image usually has already; installed there only when missing, so the
# image's own builds stay (bench/wheels/if-missing/).
$PY -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "${PY_VERSION:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d bench/wheels/if-missing \
  numpy==2.4.6 pillow==13.0.0 pyyaml==6.0.3 packaging==26.4 idna==3.20 truststore==0.10.5 \
  h11==0.16.0 anyio==4.16.0 psutil==7.2.2 attrs==26.1.0 certifi==2026.10.19.post1
# The digits scans, for a GPU image without scikit-learn (gpu_throughput.py reads them then).
$PY -c "
import numpy as np
from sklearn.datasets import load_digits
d = load_digits()
np.savez_compressed('bench/wheels/digits.npz', images=d.images, target=d.target)"
du -sh bench/wheels && ls bench/wheels bench/wheels/if-missing
