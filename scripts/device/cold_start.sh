#!/usr/bin/env bash
# Cold start on the 16-core machine: `localllm run MODEL "Hello" -n 4` from an empty kernel cache, with
# the leaf kernels compiled in one process (LOCALLLM_PARALLEL_COMPILE=1) and on every core (the default),
# alternated ROUNDS times. Needs .device/ (bash ../shared/tools/device/stage.sh). From the project root:
#   bash scripts/device/cold_start.sh [tinyllama-1.1b|llama2-7b] [q4_0|q4_k_m]      (ROUNDS=1 by default)
cd "$(dirname "$0")/../.."
shape=${1:-tinyllama-1.1b}; type=${2:-q4_0}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; G=$OUT/log.txt
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/wheels/*.whl >>"$G" 2>&1 || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
model=/tmp/bench-$shape-$type.gguf
[ -f "$model" ] || python3 scripts/make_synthetic_model.py "$shape" --type "$type" --out "$model" >>"$G" 2>&1 || { tail -n 20 "$G"; exit 1; }
echo "## cold start, $shape $type, $(nproc) cores"
for r in $(seq "${ROUNDS:-1}"); do
  for processes in 1 default; do
    home=$(mktemp -d)
    s=$(date +%s.%N)
    if [ "$processes" = default ]; then unset LOCALLLM_PARALLEL_COMPILE; else export LOCALLLM_PARALLEL_COMPILE=$processes; fi
    LOCALLLM_HOME=$home timeout 500 python3 -m localllm run "$model" "Hello" -n 4 >>"$G" 2>&1 || echo "run failed"
    echo "compile processes $processes: $(python3 -c "import sys; print(round($(date +%s.%N) - $s, 1))") s"
    rm -rf "$home"
  done
done
unset LOCALLLM_PARALLEL_COMPILE
