"""What a one-row forward pass costs beside its matmuls, by thread count: the whole pass, its
matmuls timed alone, and one empty parallel region. On the 16-core machine:
    bash scripts/device/parallel_overhead.sh"""
import sys
import time

import numba
import numpy as np
from numba import njit, prange


from localllm import LLM
from localllm.quant import linear

path = sys.argv[1]
threads = [int(t) for t in sys.argv[2].split(",")]


@njit(parallel=True, cache=True)
def empty(a):
    for i in prange(a.shape[0]):
        a[i] += 1.0


llm = LLM(path, n_ctx=1024, threads=max(threads))
eng, model = llm.engine, llm.model


def on(f):
    return eng.call(f)


def per_thread(T_):
    def f():
        numba.set_num_threads(T_)
        a = np.zeros(64)
        empty(a)
        t = time.perf_counter()
        for _ in range(2000):
            empty(a)
        launch = (time.perf_counter() - t) / 2000 * 1e6
        pool = eng.pool
        def fwd(T):
            tokens = np.arange(100, 100 + T, dtype=np.int64); pos = np.arange(64, 64 + T, dtype=np.int32)
            seq = np.zeros(T, np.int32); tables = np.arange(16, dtype=np.int32)[None, :]
            slots = pos.astype(np.int64); lr = np.arange(T - 1, T, dtype=np.int64)
            model.run_batch(tokens, pos, seq, tables, slots, lr, pool, 1)
            ts = []
            for _ in range(30):
                t = time.perf_counter(); model.run_batch(tokens, pos, seq, tables, slots, lr, pool, 1)
                ts.append(time.perf_counter() - t)
            return np.median(ts) * 1e3
        t1 = fwd(1)
        mm = 0.0
        L = model.layers[0]
        for name in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"):
            w = getattr(L, name)
            x = np.random.randn(1, w.shape[1]).astype(np.float32)
            linear(x, w)
            ts = []
            for _ in range(50):
                t = time.perf_counter(); linear(x, w); ts.append(time.perf_counter() - t)
            mm += np.median(ts) * 1e3
        w = model.output; x = np.random.randn(1, w.shape[1]).astype(np.float32); linear(x, w)
        ts = []
        for _ in range(20):
            t = time.perf_counter(); linear(x, w); ts.append(time.perf_counter() - t)
        head = np.median(ts) * 1e3
        n = len(model.layers)
        return (f"threads {T_:2d}: empty prange {launch:6.1f} us | forward T=1 {t1:6.2f} ms | matmuls alone "
                f"{mm * n + head:6.2f} ms ({n} x {mm:.3f} + head {head:.3f}) | forward T=4 {fwd(4):6.2f} ms")
    return on(f)


for T_ in threads:
    print(per_thread(T_), flush=True)
llm.close()
