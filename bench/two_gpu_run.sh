#!/usr/bin/env bash
# Issue 16's run, ON a lent machine with two GPUs, after MLX's CUDA backend is installed in
# /tmp/site by ../shared/gpu/device-install.sh (see README, "One model across several machines
# or GPUs"). Needs the demo tokenizer and the llguidance wheel carried in .gpuC/.
#
# Usage: bash bench/two_gpu_run.sh bf16|4bit [python -m bench.two_gpus flags ...]
#   bf16   random weights in a qwen2 of Llama-3.1-8B's layer sizes (/tmp/qwen2-8b-random, ~1 min)
#   4bit   its 4-bit form (/tmp/qwen2-8b-random-4bit, `mlx_lm convert -q`, made once)
# Reports go to $OUT (or /tmp/out): two_gpus_FORM$PART.txt, .json (every round's rows, written
# after each round) and _logs.txt (each server log's tail). LIMIT (seconds, default 480) bounds
# the bench: one call may run 10 minutes, and a round of five fresh systems takes ~1-2 min, so
# continue a cut run in the next call with PART=b and --first-round N, then merge both with
# `python -m bench.two_gpus --report A.json B.json`.
set -euo pipefail
# llguidance (our server's run-time dependency) travels as a wheel in .gpuC/wheels
python3 -m pip install -q --no-index --no-deps --target /tmp/site2 .gpuC/wheels/llguidance-*.whl
export PYTHONPATH=/tmp/site:/tmp/site2:$PWD HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
shape=${SHAPE:-qwen2-8b}  # qwen2-tiny: try this script on a CPU (with --backend ring)
bf16=/tmp/$shape-random
q4=/tmp/$shape-random-4bit
form=$1
shift
if [ ! -f "$bf16/config.json" ]; then
  python3 bench/random_llama.py --shape "$shape" .gpuC/tokenizer "$bf16" >/dev/null
fi
model=$bf16
if [ "$form" = 4bit ]; then
  if [ ! -f "$q4/config.json" ]; then
    python3 -m mlx_lm convert --hf-path "$bf16" --mlx-path "$q4" -q >/dev/null
  fi
  model=$q4
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true
name=two_gpus_$form${PART:-}
logs=/tmp/$name-logs
mkdir -p "$logs"
status=0
timeout -k 60 "${LIMIT:-480}" python3 -m bench.two_gpus "$model" --log-dir "$logs" \
  --json "$out/$name.json" "$@" > "$out/$name.txt" 2>&1 || status=$?
pkill -f "triton_mlx|mlx_lm|_distributed_utils" || true
for f in "$logs"/*.log; do echo "== $f"; tail -c 1500 "$f"; done > "$out/${name}_logs.txt"
tail -60 "$out/$name.txt"
exit $status
