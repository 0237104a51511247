#!/usr/bin/env bash
# Batched decode on the 16-core machine: localllm's engine against llama-batched-bench on a synthetic
# TinyLlama-1.1B. Needs .device/ (bash ../shared/tools/device/stage.sh) and reuses its bench.sh for the
# native llama.cpp build, the model and the kernel compile. Run from the project root on that machine:
#   bash scripts/device/batched.sh [q4_0|q4_k_m]        (THREADS="16 8" by default)
cd "$(dirname "$0")/../.."
type=${1:-q4_0}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PP=32 TG=8 bash .device/bench.sh tinyllama-1.1b "$type" 16 > "$OUT/warm.md" 2>&1 || { cat "$OUT/warm.md"; exit 1; }
cat "$OUT/warm.md"
export PYTHONUNBUFFERED=1 LOCALLLM_HOME=/tmp/llh PYTHONPATH=/tmp/site:$PWD
for t in ${THREADS:-16 8}; do
  timeout 400 python3 scripts/bench_batched_vs_llamacpp.py "/tmp/bench-tinyllama-1.1b-$type.gguf" \
    --llama-batched-bench .device/llama.cpp/build/bin/llama-batched-bench -t "$t" --rounds 1 | tee -a "$OUT/batched.md"
done
