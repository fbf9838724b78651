#!/usr/bin/env bash
# GPU throughput at real shapes (random weights): Qwen2.5-0.5B stage 1 and 2 and Qwen2.5-1.5B
# stage 1 (+ SigLIP-2-base), the seed's baseline vs the default loop, then the default loop
# with one layer changed at a time; real tokens/s, MFU, peak memory, speed-ups, all measured
# in this one run. One call, under 9 minutes on one H100/H200 including the wheel install.
#   bash bench/gpu_throughput.sh              # on the GPU machine; results in $OUT
#   bash bench/gpu_throughput.sh --dry-run    # tiny shapes on a CPU: every code path
# Wheels the GPU image lacks (it has torch + CUDA, no network) travel in bench/wheels/
# (git-ignored; `bash bench/gpu_wheels.sh` downloads them on a machine with an index).
set -euo pipefail
cd "$(dirname "$0")/.."
export DISTILL_PROGRESS=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export OUT=${OUT:-bench/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
started=$(date +%s)
if compgen -G "bench/wheels/*.whl" >/dev/null && [[ " $* " != *" --dry-run "* ]]; then
  # --no-deps: only what was carried; torch stays the image's own CUDA build
  $PY -m pip install --quiet --no-index --no-deps bench/wheels/*.whl 2>&1 | tail -3 \
    || echo "wheel install failed; going on with the image's packages"
  # The image's own numpy, pillow, ... stay; these only fill what it lacks.
  missing=$($PY - <<'PY'
import glob, importlib.metadata as md, os
for wheel in sorted(glob.glob("bench/wheels/if-missing/*.whl")):
    name = os.path.basename(wheel).split("-")[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(wheel)
PY
)
  if [ -n "$missing" ]; then
    echo "installing what the image lacks: $(echo $missing | xargs -n1 basename | tr '\n' ' ')"
    $PY -m pip install --quiet --no-index --no-deps $missing 2>&1 | tail -3 || true
  fi
fi
{
  echo "# $(date -u +%FT%TZ) $(uname -n)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  $PY -c "import liger_kernel" 2>/dev/null && echo "liger: installed" || echo "liger: not installed"
  echo "install: $(( $(date +%s) - started )) s"
} | tee "$OUT/environment.txt"
# A hard stop well inside the lease; results are written after every section.
left=$(( 530 - ($(date +%s) - started) ))
timeout "$left" $PY bench/gpu_throughput.py --out "$OUT" --budget-s $(( left - 150 )) "$@" \
  2>&1 | tee "$OUT/log.txt"
