"""F32, F16 and BF16 weights on x86: 8-lane fused dots, four activation rows per weight load.

Each output element is the same sum whatever M is: two 8-lane accumulators
take the products at k = 16j + l and 16j + 8 + l with fused multiply-adds, a
last 8 (when K % 16 >= 8) goes to the first, the two are added and their lanes
summed in one fixed order (hsum), and the K % 8 tail is added last, in order.
Two accumulators per row, not one, because a chain of dependent FMAs waits 4
cycles for each: with one the kernel was latency-bound, not memory-bound.

A block of four rows shares each widened weight vector, which is what makes a
small batch (speculative verification, batched decode) cost little more than
one row: the weights are read once and every load feeds four rows' FMAs. Two
or three leftover rows run as a block with repeated rows (the same arithmetic,
outputs dropped); a single leftover row runs alone.

The weight format travels as the dtype of the weights' view (float32, uint16 for
F16, int16 for BF16's bit patterns), so each format compiles its own loop with
no test of the format inside it.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from localllm.quant.f16 import bf16_to_f32, f16_to_f32
from localllm.quant.simd_x86 import fmadd, fzero, hsum, load8, vadd

ROW_BLOCK = 4  # activation rows that share each weight load


def _widen(v):
    raise NotImplementedError  # numba-only


@overload(_widen, inline="always")
def _widen_impl(v):
    if v == types.float32:
        return lambda v: v
    if v == types.uint16:
        return lambda v: f16_to_f32(v)
    if v == types.int16:
        return lambda v: bf16_to_f32(np.uint16(v))
    return None


@njit(inline="always", cache=True)
def _finish(w, xr, lo, hi, K16, K8):
    """One element from its two accumulators: the odd 8 past K16, the lane sum, the tail."""
    if K8 > K16:
        lo = fmadd(lo, load8(w, K16), load8(xr, K16))
    s = hsum(vadd(lo, hi))
    for k in range(K8, xr.shape[0]):
        s += _widen(w[k]) * xr[k]
    return s


@njit(inline="always", cache=True)
def _one_row(w, xr, K16, K8):
    lo, hi = fzero(), fzero()
    for k in range(0, K16, 16):
        lo = fmadd(lo, load8(w, k), load8(xr, k))
        hi = fmadd(hi, load8(w, k + 8), load8(xr, k + 8))
    return _finish(w, xr, lo, hi, K16, K8)


@njit(inline="always", cache=True)
def _four_rows(w, x, out, r, m0, m1, m2, m3, n_valid, K16, K8):
    """Rows m0..m3 of x against weight row w; writes the first n_valid of them to out[:, r]."""
    x0, x1, x2, x3 = x[m0], x[m1], x[m2], x[m3]
    l0, l1, l2, l3 = fzero(), fzero(), fzero(), fzero()
    h0, h1, h2, h3 = fzero(), fzero(), fzero(), fzero()
    for k in range(0, K16, 16):
        v = load8(w, k)
        l0 = fmadd(l0, v, load8(x0, k))
        l1 = fmadd(l1, v, load8(x1, k))
        l2 = fmadd(l2, v, load8(x2, k))
        l3 = fmadd(l3, v, load8(x3, k))
        v = load8(w, k + 8)
        h0 = fmadd(h0, v, load8(x0, k + 8))
        h1 = fmadd(h1, v, load8(x1, k + 8))
        h2 = fmadd(h2, v, load8(x2, k + 8))
        h3 = fmadd(h3, v, load8(x3, k + 8))
    out[m0, r] = _finish(w, x0, l0, h0, K16, K8)
    if n_valid > 1:
        out[m1, r] = _finish(w, x1, l1, h1, K16, K8)
    if n_valid > 2:
        out[m2, r] = _finish(w, x2, l2, h2, K16, K8)
    if n_valid > 3:
        out[m3, r] = _finish(w, x3, l3, h3, K16, K8)


@njit(parallel=True, cache=True)
def _mm_typed(W, x, out, n_tiles):
    """out (M, N) = x (M, K) @ W.T, W (N, K) float32, uint16 (F16) or int16 (BF16 bits)."""
    N = W.shape[0]
    M, K = x.shape
    K16, K8 = K - K % 16, K - K % 8
    size = (N + n_tiles - 1) // n_tiles
    for t in prange(n_tiles):
        for r in range(min(N, t * size), min(N, (t + 1) * size)):
            w = W[r]  # (K,)
            m = 0
            while M - m >= 2:  # blocks of four; two or three left: a block with repeated rows
                n = min(ROW_BLOCK, M - m)
                _four_rows(w, x, out, r, m, m + 1, m + min(2, n - 1), m + min(3, n - 1), n, K16, K8)
                m += n
            if m < M:
                out[m, r] = _one_row(w, x[m], K16, K8)


@njit(cache=True)
def mm_float(raw, code, x, out, n_tiles):
    """out (M, N) = x (M, K) @ W.T for F32 (code 0), F16 (1) and BF16 (30) rows raw (N, row_bytes)."""
    if code == 0:
        _mm_typed(raw.view(np.float32), x, out, n_tiles)
    elif code == 1:
        _mm_typed(raw.view(np.uint16), x, out, n_tiles)
    else:
        _mm_typed(raw.view(np.int16), x, out, n_tiles)
