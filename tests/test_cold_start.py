"""A cold start compiles the forward pass's leaf kernels in parallel processes (models.prebuild)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q

from localllm.gguf import open_gguf
from localllm.models import load_model
from localllm.models.prebuild import compile_lock
from tiny_models import write_tiny_model

CHECK = Path(__file__).with_name("cold_start_check.py")
TOKENS = [5, 9, 13, 2, 77, 31]


def test_parallel_cold_start_compiles_each_leaf_once(tmp_path):
    # gemma3 with one KV head: GeGLU, head norms, sliding windows and split attention
    path = write_tiny_model(tmp_path / "tiny.gguf", "gemma3", Q.Q8_0, n_layer=2, n_head=4, n_head_kv=1,
                            head_dim=32, sliding_window=8)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "kernels"), LOCALLLM_PARALLEL_COMPILE="2",
               NUMBA_NUM_THREADS="2")
    run = subprocess.run([sys.executable, str(CHECK), str(path), ",".join(map(str, TOKENS)),
                          str(tmp_path / "logits.npy")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(report["workers"]) == 2 and all(report["workers"])
    mine, theirs = (set(c) for c in report["compiled"])
    assert mine and theirs  # the helper process compiled its share and reported it
    # numba's cache index is unsafe for two processes adding entries of one function at once
    assert not mine & theirs
    # every leaf came from the cache: the signatures prebuild compiled are the forward pass's own
    assert not (mine | theirs) & set(report["after"]), report["after"]
    # and the kernels are the usual ones, bit for bit
    model = load_model(open_gguf(path))
    want = model.forward(TOKENS, model.new_cache(64), logits_rows=range(len(TOKENS)))
    assert np.array_equal(np.load(tmp_path / "logits.npy"), want)


def test_a_second_process_waits_for_the_compile_lock():
    # the child inherits this process's NUMBA_CACHE_DIR, so both lock the same cache
    code = ("import time\nfrom localllm.models.prebuild import compile_lock\nprint('waiting', flush=True)\n"
            "with compile_lock():\n    print(time.time(), flush=True)")
    with compile_lock():
        other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline().strip() == "waiting"
        time.sleep(1)
        released = time.time()
    took_it = float(other.stdout.readline())
    other.wait(timeout=60)
    assert took_it >= released
