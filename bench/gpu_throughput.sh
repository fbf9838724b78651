#!/usr/bin/env bash
# GPU throughput at real shapes (Qwen2.5-0.5B + SigLIP-2-base, random weights): stage 1
# and stage 2, baseline vs default loop, real tokens/s and peak memory -> bench/gpu_results.json.
# Budget: under 8 minutes on one H100/RTX PRO 6000 (4 runs: ~1 min each incl. compile).
#   bash bench/gpu_throughput.sh              # on the GPU machine
#   bash bench/gpu_throughput.sh --dry-run    # tiny shapes, CPU: validates the script
set -euo pipefail
cd "$(dirname "$0")/.."
export DISTILL_PROGRESS=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
$PY -c "import liger_kernel" 2>/dev/null && echo "liger: installed" || echo "liger: not installed (optional)"
exec timeout 470 $PY bench/gpu_throughput.py "$@"
