"""Quick throughput numbers for the quantized matmul kernels.

    python scripts/bench_quant.py [--n 4096 --k 4096] [--types Q4_0,Q8_0] [--reps 20]

Prints matvec (M=1) GB/s of weight bytes per type at 1 and 2 threads, the
matmul kernels' GOP/s at several M (one kernel serves every M), and numpy's f32
sgemm on the same shape for reference.
Keep it short on shared machines: the defaults take well under a minute.
"""

import argparse
import time

import localllm._numba_setup as setup

import numba
import numpy as np
from gguf import GGMLQuantizationType as T

from localllm.quant import FORMATS, QuantTensor, kernel_path, linear

FAST = ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16", "F32"]


def random_weights(qtype: T, n: int, k: int, rng) -> np.ndarray:
    """(n, row_bytes) uint8 of valid blocks: random codes, small finite f16 scales."""
    if qtype == T.F32:
        return rng.standard_normal((n, k)).astype(np.float32).view(np.uint8)
    if qtype in (T.F16, T.BF16):
        bits = rng.standard_normal((n, k)).astype(np.float32).view(np.uint32)
        return (bits >> 16).astype(np.uint16).view(np.uint8) if qtype == T.BF16 else bits.view(np.float32).astype(np.float16).view(np.uint8)
    fmt = FORMATS[qtype]
    raw = rng.integers(0, 256, (n, fmt.row_bytes(k)), dtype=np.uint8)
    blocks = raw.reshape(n, -1, fmt.type_size)  # (n, nb, type_size)
    # every f16 field of these formats sits at 0/2 or at the block's end; small scales are valid there
    scale = np.array([0.01], np.float16).view(np.uint8)
    for off in {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q6_K: (208,)}.get(qtype, (0, 2)):
        blocks[:, :, off], blocks[:, :, off + 1] = scale[0], scale[1]
    return raw


def timeit(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--types", default=",".join(FAST))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--ms", default="2,4,8,16,32,64")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, k = args.n, args.k
    names = args.types.split(",")
    weights = {name: QuantTensor(random_weights(T[name], n, k, rng), T[name], (n, k)) for name in names}
    x1 = rng.standard_normal((1, k)).astype(np.float32)
    max_threads = numba.config.NUMBA_NUM_THREADS
    print(f"kernels={kernel_path()} shape=({n}, {k}) max_threads={max_threads}")

    print("\nmatvec (M=1), GB/s of weight bytes")
    for threads in sorted({1, min(2, max_threads)}):
        numba.set_num_threads(threads)
        for name, w in weights.items():
            dt = timeit(lambda: linear(x1, w), args.reps)
            print(f"  threads={threads} {name:5s} {w.raw.nbytes / dt / 1e9:6.1f} GB/s {dt * 1e3:7.3f} ms")
    print(f"  threading layer: {setup.threading_layer()}")

    numba.set_num_threads(min(2, max_threads))
    print(f"\nGFLOP/s by M at {numba.get_num_threads()} threads: localllm kernel | numpy f32 sgemm")
    wf = rng.standard_normal((n, k)).astype(np.float32)
    for m in (int(s) for s in args.ms.split(",")):
        x = rng.standard_normal((m, k)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        flops = 2.0 * m * n * k
        sgemm = flops / timeit(lambda: np.matmul(x, wf.T, out=out), max(2, args.reps // 4)) / 1e9
        for name, w in weights.items():
            rate = flops / timeit(lambda: linear(x, w, out), max(2, args.reps // 4)) / 1e9
            print(f"  M={m:4d} {name:5s} {rate:7.1f} | {sgemm:7.1f}")


if __name__ == "__main__":
    main()
