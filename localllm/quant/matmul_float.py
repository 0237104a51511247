"""F32, F16 and BF16 weights dotted with f32 activations, for every M.

One loop per element, the same compiled loop whatever M is, so an element's
summation order (LLVM's vectorized reduction over K) never depends on how many
rows share the call. Used on every path: these weights have no integer codes.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange

from localllm.quant.f16 import bf16_to_f32, f16_to_f32


@njit(inline="always", cache=True, fastmath=True)
def _dot_row(raw_row, code, xr):
    K = xr.shape[0]
    acc = np.float32(0.0)
    if code == 0:
        w = raw_row.view(np.float32)  # (K,)
        for i in range(K):
            acc += w[i] * xr[i]
    elif code == 1:
        h = raw_row.view(np.uint16)  # (K,)
        for i in range(K):
            acc += f16_to_f32(h[i]) * xr[i]
    else:
        h = raw_row.view(np.uint16)  # (K,)
        for i in range(K):
            acc += bf16_to_f32(h[i]) * xr[i]
    return acc


@njit(parallel=True, cache=True)
def mm_float(raw, code, x, out, n_tiles):
    """out (M, N) = x (M, K) @ W.T for F32 (code 0), F16 (1) and BF16 (30) rows raw (N, row_bytes)."""
    N = raw.shape[0]
    M = x.shape[0]
    size = (N + n_tiles - 1) // n_tiles
    for t in prange(n_tiles):
        for r in range(min(N, t * size), min(N, (t + 1) * size)):
            for m in range(M):
                out[m, r] = _dot_row(raw[r], code, x[m])
