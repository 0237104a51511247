"""F32, F16 and BF16 weights on x86: 8-lane fused dots, up to four activation rows per weight load.

Each output element is the same sum whatever M is: lane l accumulates the
products at k = l, l + 8, ... with fused multiply-adds, the lanes are summed
in one fixed order (hsum), and the K % 8 tail is added last, in order. A
block of four rows shares each widened weight vector, which is what makes a
small batch (speculative verification, batched decode) cost little more than
one row: the weights are read once and every load feeds four FMAs.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange

from localllm.quant.f16 import bf16_to_f32, f16_to_f32
from localllm.quant.simd_x86 import fmadd, fzero, hsum, load_bf16x8, load_f16x8, load_f32x8

ROW_BLOCK = 4  # activation rows that share each weight load


@njit(inline="always", cache=True)
def _wvec(row, code, k):
    """Weights k .. k+7 of one raw row as F32x8."""
    if code == 0:
        return load_f32x8(row, 4 * k)
    if code == 1:
        return load_f16x8(row, 2 * k)
    return load_bf16x8(row, 2 * k)


@njit(inline="always", cache=True)
def _wscalar(row, code, k):
    if code == 0:
        return row[4 * k : 4 * k + 4].view(np.float32)[0]
    h = np.uint16(row[2 * k]) | (np.uint16(row[2 * k + 1]) << np.uint16(8))
    return f16_to_f32(h) if code == 1 else bf16_to_f32(h)


@njit(inline="always", cache=True)
def _tail(row, code, xr, k0, s):
    """s plus the products past the last full 8-lane step, in order."""
    for k in range(k0, xr.shape[0]):
        s += _wscalar(row, code, k) * xr[k]
    return s


@njit(parallel=True, cache=True)
def mm_float(raw, code, x, out, n_tiles):
    """out (M, N) = x (M, K) @ W.T for F32 (code 0), F16 (1) and BF16 (30) rows raw (N, row_bytes)."""
    N = raw.shape[0]
    M, K = x.shape
    K8 = K - K % 8
    size = (N + n_tiles - 1) // n_tiles
    for t in prange(n_tiles):
        for r in range(min(N, t * size), min(N, (t + 1) * size)):
            row = raw[r]  # (row_bytes,)
            m = 0
            while m + ROW_BLOCK <= M:
                x0, x1, x2, x3 = (x[m].view(np.uint8), x[m + 1].view(np.uint8),
                                  x[m + 2].view(np.uint8), x[m + 3].view(np.uint8))  # (4K,) bytes each
                a0, a1, a2, a3 = fzero(), fzero(), fzero(), fzero()
                for k in range(0, K8, 8):
                    w = _wvec(row, code, k)
                    a0 = fmadd(a0, w, load_f32x8(x0, 4 * k))
                    a1 = fmadd(a1, w, load_f32x8(x1, 4 * k))
                    a2 = fmadd(a2, w, load_f32x8(x2, 4 * k))
                    a3 = fmadd(a3, w, load_f32x8(x3, 4 * k))
                out[m, r] = _tail(row, code, x[m], K8, hsum(a0))
                out[m + 1, r] = _tail(row, code, x[m + 1], K8, hsum(a1))
                out[m + 2, r] = _tail(row, code, x[m + 2], K8, hsum(a2))
                out[m + 3, r] = _tail(row, code, x[m + 3], K8, hsum(a3))
                m += ROW_BLOCK
            while m < M:
                xb = x[m].view(np.uint8)  # (4K,)
                a = fzero()
                for k in range(0, K8, 8):
                    a = fmadd(a, _wvec(row, code, k), load_f32x8(xb, 4 * k))
                out[m, r] = _tail(row, code, x[m], K8, hsum(a))
                m += 1
