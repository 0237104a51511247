#!/usr/bin/env bash
# This tree against an earlier commit's localllm on the 16-core machine: `localllm bench` (pp512, tg128)
# on a synthetic TinyLlama-1.1B Q4_0, the two alternated per thread count, two rounds. Stage the earlier
# package first, here: bash ../shared/tools/device/stage.sh && mkdir -p .device/base &&
#   git archive REV localllm | tar -x -C .device/base
# then on that machine, from the project root: bash scripts/device/ab_vs_base.sh   (THREADS="2 16")
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/wheels/*.whl >/dev/null 2>&1
m=/tmp/ab-q4_0.gguf
[ -f $m ] || PYTHONPATH=/tmp/site:$PWD python3 scripts/make_synthetic_model.py tinyllama-1.1b --type q4_0 --out $m >/dev/null 2>&1
# `python -m` puts the working directory first on sys.path, so each side runs from its own tree
run() { (cd "$1" && LOCALLLM_HOME=/tmp/h_$2 PYTHONPATH=/tmp/site:$1 timeout 400 python3 -m localllm bench $m "${@:3}"); }
for v in new base; do  # compile once, untimed
  src=$PWD; [ $v = base ] && src=$PWD/.device/base
  run "$src" $v -p 16 -n 4 -t 4 >/dev/null 2>&1
done
for r in 1 2; do for t in ${THREADS:-2 16}; do for v in base new; do
  src=$PWD; [ $v = base ] && src=$PWD/.device/base
  run "$src" $v -p 512 -n 128 -r 2 -t $t --json 2>/dev/null | python3 -c "
import json, sys
print('$v t=$t', ' '.join(f\"{r['test']} {r['tokens_per_s']:.1f}\" for r in json.load(sys.stdin)['results']))"
done; done; done
