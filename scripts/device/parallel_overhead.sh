#!/usr/bin/env bash
# The per-pass overhead of a one-row forward on the 16-core machine (synthetic TinyLlama-1.1B Q4_0),
# at 16, 8 and 2 threads. Needs .device/ (bash ../shared/tools/device/stage.sh) for the gguf wheel.
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; G=$OUT/log.txt
export PYTHONUNBUFFERED=1 LOCALLLM_HOME=/tmp/llh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/wheels/*.whl >>"$G" 2>&1
export PYTHONPATH=/tmp/site:$PWD
model=/tmp/bench-tinyllama-1.1b-q4_0.gguf
[ -f "$model" ] || python3 scripts/make_synthetic_model.py tinyllama-1.1b --type q4_0 --out "$model" >>"$G" 2>&1
python3 scripts/device/parallel_overhead.py "$model" 16,8,2 2>>"$G"
