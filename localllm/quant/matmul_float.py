"""F32, F16 and BF16 weights dotted with f32 activations, for every M: `mm_float`.

On x86 it is matmul_float_x86's explicit 8-lane kernel; this module's loop is
the portable one.

Each weight row is widened to f32 once (exact) into a small buffer that stays in
L1 while it meets all M activation rows, so the weights are read from memory
once. Every element is then the same compiled dot loop whatever M is, so its
summation order (LLVM's vectorized reduction over K) never depends on how many
rows share the call. Used on every path: these weights have no integer codes.

fastmath must be on the kernel itself, not only on inlined helpers: numba
inlines a helper's IR into the caller, which then compiles it with the caller's
flags. Without it the reduction stays scalar (measured 1 GB/s on F16 rows).
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange

from localllm.isa import USE_X86
from localllm.quant.f16 import bf16_to_f32, f16_to_f32


@njit(inline="always", cache=True, fastmath=True)
def _widen_row(raw_row, code, w):
    """One F16 (code 1) or BF16 (30) row of raw bytes -> f32 values in w (K,)."""
    h = raw_row.view(np.uint16)  # (K,)
    if code == 1:
        for i in range(w.shape[0]):
            w[i] = f16_to_f32(h[i])
    else:
        for i in range(w.shape[0]):
            w[i] = bf16_to_f32(h[i])


@njit(inline="always", cache=True, fastmath=True)
def _dot(w, xr):
    acc = np.float32(0.0)
    for i in range(xr.shape[0]):
        acc += w[i] * xr[i]
    return acc


@njit(parallel=True, cache=True, fastmath=True)
def mm_float_portable(raw, code, x, out, n_tiles):
    """out (M, N) = x (M, K) @ W.T for F32 (code 0), F16 (1) and BF16 (30) rows raw (N, row_bytes)."""
    N = raw.shape[0]
    M, K = x.shape
    size = (N + n_tiles - 1) // n_tiles
    for t in prange(n_tiles):
        buf = np.empty(K, np.float32)  # (K,) one widened row, per tile
        for r in range(min(N, t * size), min(N, (t + 1) * size)):
            if code == 0:
                w = raw[r].view(np.float32)  # (K,)
            else:
                _widen_row(raw[r], code, buf)
                w = buf
            for m in range(M):
                out[m, r] = _dot(w, x[m])


if USE_X86:
    from localllm.quant.matmul_float_x86 import mm_float
else:
    mm_float = mm_float_portable
