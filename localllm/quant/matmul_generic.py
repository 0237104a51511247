"""Portable matmul: dequantize one weight row to f32, dot it with every x row.

Serves every supported type on every CPU. It is the only path for the
"correct only" formats (Q5_1, Q2_K, Q3_K, IQ4_NL, IQ4_XS) and the fallback
for all formats when the AVX2 kernels are unavailable or LOCALLLM_PORTABLE=1.
The dequantized row (K floats) stays in L1/L2 while it meets the M x rows, so
the weights are still read from memory once.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange

from localllm.quant.dequant import dequant_row


@njit(inline="always", cache=True)
def _dot(a, b):
    acc = np.float32(0.0)
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(parallel=True, cache=True, fastmath=True)
def mm_generic(raw, code, x, out, n_tiles):
    """out (M, N) <- x (M, K) @ dequant(raw (N, row_bytes)).T, rows split in n_tiles tiles."""
    N = raw.shape[0]
    M, K = x.shape
    size = (N + n_tiles - 1) // n_tiles
    for t in prange(n_tiles):
        w = np.empty(K, np.float32)  # (K,) one dequantized row, per tile
        for r in range(min(N, t * size), min(N, (t + 1) * size)):
            dequant_row(code, raw[r], w)
            for m in range(M):
                out[m, r] = _dot(w, x[m])
