#!/usr/bin/env bash
# The GPU benchmark, run ON the lent GPU machine (see README, Performance) after MLX's CUDA
# backend is installed in /tmp/site by ../shared/gpu/device-install.sh. Needs the OpenAI SDK
# wheels and the demo tokenizer carried in .gpuC/ (wheels/, tokenizer/).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site2 .gpuC/wheels/*.whl
export PYTHONPATH=/tmp/site:/tmp/site2:$PWD HF_HUB_OFFLINE=1
python3 bench/random_llama.py .gpuC/tokenizer /tmp/llama-1b-random
out=${OUT:-/tmp/out}
mkdir -p "$out"
if [ "${1:-}" = "--embeddings" ]; then
  mkdir -p /tmp/emb && python3 bench/gpu_embeddings.py .gpuC/tokenizer /tmp/llama-1b-random \
    /tmp/emb 2>&1 | tee "$out/gpu_embeddings.txt"
  exit "${PIPESTATUS[0]}"
fi
python3 -m bench --model-dir /tmp/llama-1b-random --max-tokens 128 --concurrency 1 16 64 \
  --repeats 2 --case-timeout 240 "$@" 2>&1 | tee "$out/gpu_bench.txt"
