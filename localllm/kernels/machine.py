"""Tiny kernels that measure the machine itself (for bench's roofline figures)."""

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401


@njit(cache=True, parallel=True, fastmath=True)
def parallel_sum(a):
    """Sum of a 1-D float32 array, split across threads: its time is a streaming read."""
    n = a.size
    n_chunks = 64
    per = (n + n_chunks - 1) // n_chunks
    partial = np.zeros(n_chunks, np.float32)
    for c in prange(n_chunks):
        s = np.float32(0.0)
        for i in range(c * per, min(n, (c + 1) * per)):
            s += a[i]
        partial[c] = s
    return partial.sum()
