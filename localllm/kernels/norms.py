"""RMSNorm, rounded as llama.cpp rounds it: squares in f32 summed in double,
the mean and 1/sqrt in f32, then x * scale * w in f32."""

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401


@njit(inline="always", cache=True, fastmath=False)
def _rmsnorm_row(out, x, w, eps, r):
    D = x.shape[1]
    ss = 0.0
    for i in range(D):
        v = x[r, i]
        ss += np.float64(v * v)
    scale = np.float32(1.0) / np.sqrt(np.float32(ss / D) + eps)
    for i in range(D):
        out[r, i] = x[r, i] * scale * w[i]


@njit(cache=True, fastmath=False)
def rmsnorm_rows(out, x, w, eps):
    """out[r, :] = x[r, :] / sqrt(mean(x[r]^2) + eps) * w, on this thread.

    out, x: (R, D) float32 (may alias); w: (D,) float32.
    """
    for r in range(x.shape[0]):
        _rmsnorm_row(out, x, w, eps, r)


@njit(cache=True, fastmath=False, parallel=True)
def rmsnorm_rows_par(out, x, w, eps):
    """rmsnorm_rows with the rows spread over threads (each row computed the same way)."""
    for r in prange(x.shape[0]):  # int64: prange's index is unsigned in the parfor, one compile of the callee for both
        _rmsnorm_row(out, x, w, eps, np.int64(r))

