#!/usr/bin/env bash
# The GPU benchmark, run ON the lent GPU machine (see README, Performance) after MLX's CUDA
# backend is installed in /tmp/site by ../shared/gpu/device-install.sh. Needs the OpenAI SDK
# wheels and the demo tokenizer carried in .gpuC/ (wheels/, tokenizer/), and llguidance's wheel,
# which ../shared/gpu/prepare.sh does not stage: run `bash bench/gpu_run.sh --stage` HERE once
# after prepare.sh (it adds the wheel to .gpuC/wheels; the server cannot start without it).
#
# Usage: bash bench/gpu_run.sh [--embeddings | --quantized] [python -m bench flags ...]
#   (nothing)        the bench on random bf16 weights in Llama-3.2-1B's shape (/tmp/llama-1b-random)
#   --quantized      then the same bench on its 4-bit form (/tmp/llama-1b-random-4bit, made once
#                    with `python3 -m mlx_lm convert --hf-path ... --mlx-path ... -q`)
#   --model-dir DIR  the bench on DIR only; either folder above is built first when named
#   --embeddings     the embeddings bench instead (bench/gpu_embeddings.py)
# Defaults given to python -m bench (a later flag wins): --max-tokens 128 --concurrency 1 16 64
# 128 256 --repeats 5 --sweep-repeats 5 --case-timeout 240. Reports go to $OUT (or /tmp/out):
# gpu_bench.txt / gpu_bench_4bit.txt, with every round's figures in the .jsonl beside each.
#
# One command may run 10 minutes. Estimated time per part (H100/H200, 1B model, 128 tokens;
# all three systems per round; each figure from earlier runs, not a promise):
#   set-up: random weights ~20 s (once per machine), 4-bit convert ~15 s (once), loading the
#     three systems ~30 s, warm-ups ~5 s per level
#   single stream, 5 rounds x 4 systems x ~0.6 s                         ~15 s
#   16 streams, 5 rounds x (ours ~2 s, mlx_lm.server ~3 s, raw ~1.5 s)   ~35 s
#   64 streams, 5 rounds x (~3 s, ~6 s or its failures, ~2 s)            ~60 s
#   128 streams, 5 rounds x (~4 s, ~10 s, ~3 s)                          ~90 s
#   256 streams, 5 rounds x (~6 s, ~20 s, ~5 s)                          ~160 s
#   prefix case ~2 s; structured case (its own server, 1,16,64 x 5 rounds) ~3-4 min
# So one model's full bench (~6-7 min) fits one command with --skip-structured; keep under ~9 min:
#   bash bench/gpu_run.sh --skip-structured                      bf16: single + sweep + prefix
#   bash bench/gpu_run.sh --model-dir /tmp/llama-1b-random-4bit --skip-structured     4-bit
#   bash bench/gpu_run.sh --only-single | --only-sweep [--concurrency 128 256]  one part only
#   bash bench/gpu_run.sh --only-structured                      the structured case alone
#   --quantized runs both models in one command: only with --only-single, or --sweep-repeats 3
set -euo pipefail
if [ "${1:-}" = "--stage" ]; then  # here, with PyPI: the run-time dependency prepare.sh lacks
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_35_x86_64 --platform manylinux_2_31_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpuC/wheels \
    "llguidance==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llguidance"))')"
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --target /tmp/site2 .gpuC/wheels/*.whl
export PYTHONPATH=/tmp/site:/tmp/site2:$PWD HF_HUB_OFFLINE=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
bf16=/tmp/llama-1b-random
q4=/tmp/llama-1b-random-4bit

build() {  # build the model folder $1 when it is one of ours and missing
  if [ -f "$1/config.json" ]; then return; fi
  if [ "$1" = "$bf16" ] || [ "$1" = "$q4" ]; then
    python3 bench/random_llama.py .gpuC/tokenizer "$bf16" >/dev/null
  fi
  if [ "$1" = "$q4" ] && [ ! -f "$q4/config.json" ]; then
    python3 -m mlx_lm convert --hf-path "$bf16" --mlx-path "$q4" -q
  fi
}

if [ "${1:-}" = "--embeddings" ]; then
  build "$bf16"
  mkdir -p /tmp/emb && python3 bench/gpu_embeddings.py .gpuC/tokenizer "$bf16" \
    /tmp/emb 2>&1 | tee "$out/gpu_embeddings.txt"
  exit "${PIPESTATUS[0]}"
fi

models=()
flags=()
quantized=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quantized) quantized=1 ;;
    --model-dir) models+=("$2"); shift ;;
    --model-dir=*) models+=("${1#*=}") ;;
    *) flags+=("$1") ;;
  esac
  shift
done
if [ ${#models[@]} -eq 0 ]; then
  models=("$bf16")
  if [ "$quantized" = 1 ]; then models+=("$q4"); fi
fi

status=0
for model in "${models[@]}"; do
  build "$model"
  case "$model" in
    "$bf16") name=gpu_bench ;;
    "$q4") name=gpu_bench_4bit ;;
    *) name=gpu_bench_$(basename "$model") ;;
  esac
  python3 -m bench --model-dir "$model" --max-tokens 128 --concurrency 1 16 64 128 256 \
    --repeats 5 --sweep-repeats 5 --case-timeout 240 --json "$out/$name.jsonl" \
    ${flags[@]+"${flags[@]}"} 2>&1 | tee "$out/$name.txt" || status=1
done
exit "$status"
