#!/usr/bin/env python3
"""Time causal attention over a paged f16 cache for one prompt shape.

    python scripts/bench_attention.py --t 512 --heads 4 --kv-heads 1 --dim 256   # Gemma 3's prompt

Prints the best of --reps calls (ms) and the GFLOP/s of the score and value
products (2 x 2 x heads x dim x T(T+1)/2 flops).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from localllm.kernels.attention import attention
from localllm.kv_cache import BLOCK_SIZE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--t", type=int, default=512, help="prompt rows")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--dim", type=int, default=256, help="head dimension (keys and values)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    T, H, G, d = args.t, args.heads, args.kv_heads, args.dim
    n_blocks = (T + BLOCK_SIZE - 1) // BLOCK_SIZE
    rng = np.random.default_rng(0)
    kc = rng.standard_normal((n_blocks, G, BLOCK_SIZE, d)).astype(np.float16).view(np.uint16)  # f16 bits
    vc = rng.standard_normal((n_blocks, G, BLOCK_SIZE, d)).astype(np.float16).view(np.uint16)
    q = (rng.standard_normal((T, H, d)) * 0.06).astype(np.float32)  # (T, H, d)
    positions, seq = np.arange(T, dtype=np.int32), np.zeros(T, np.int32)
    tables = np.arange(n_blocks, dtype=np.int32)[None, :]  # one sequence, blocks in order
    attention(q, kc, vc, positions, seq, tables)  # compile or load
    best = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter()
        attention(q, kc, vc, positions, seq, tables)
        best = min(best, time.perf_counter() - t0)
    flops = 2 * 2 * H * d * T * (T + 1) / 2
    print(f"T={T} heads={H} kv_heads={G} dim={d} threads={args.threads}: {best * 1e3:.1f} ms, "
          f"{flops / best / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
