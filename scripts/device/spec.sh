#!/usr/bin/env bash
# Draft-model speculation on the 16-core machine: a synthetic TinyLlama-1.1B F16 target (made with
# `localllm quantize --type f16` from the synthetic Q4_0 file) drafted by that Q4_0 file, against
# llama-server with the same pair (-md). Reuses bench.sh's wheel install; builds llama-server.
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; G=$OUT/log.txt
export PYTHONUNBUFFERED=1 LOCALLLM_HOME=/tmp/llh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/wheels/*.whl >>"$G" 2>&1 || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
B=.device/llama.cpp/build-server
if [ ! -x $B/bin/llama-server ]; then
  (cd .device/llama.cpp && cmake -B build-server -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CCACHE=OFF \
     -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
     -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_APP=OFF >>"$G" 2>&1 && ninja -C build-server llama-server >>"$G" 2>&1) \
     || { tail -n 30 "$G"; echo "llama.cpp build failed"; exit 1; }
fi
echo "built $(date)"
q4=/tmp/t-q4_0.gguf; f16=/tmp/t-f16.gguf
[ -f $q4 ] || python3 scripts/make_synthetic_model.py tinyllama-1.1b --type q4_0 --out $q4 >>"$G" 2>&1 || { tail "$G"; exit 1; }
[ -f $f16 ] || python3 -m localllm quantize $q4 $f16 --type f16 >>"$G" 2>&1 || { tail "$G"; exit 1; }
echo "models $(date)"; lscpu | grep "Model name"
for t in ${THREADS:-16 4}; do
  timeout ${LIMIT:-420} python3 scripts/bench_speculative.py $f16 --draft $q4 --threads $t --rounds 1 --tokens ${TOKENS:-96} \
    --passage-chars ${CHARS:-400} --llama-server $B/bin/llama-server 2>>"$G" | tee -a "$OUT/spec.md"
done
tail -n 20 "$G"
