"""On-the-fly activation quantization for the integer-dot matvec kernels.

The codes and scales are exactly llama.cpp's, so the integer dot products are
the same integers llama.cpp computes and only float summation order differs.
Each weight type is paired with the activation format llama.cpp pairs it with:

  Q8_0  (Q4_0, Q5_0, Q8_0, IQ4_NL): blocks of 32, d = amax/127 stored as f16,
        codes rint(x * 127/amax) (AVX2 rounds half to even).
  Q8_1  (Q4_1, Q5_1): as Q8_0, plus s = d * sum(codes) stored as f16, which
        carries the weights' min term.
  Q8_K  (Q2_K..Q6_K, IQ4_XS): blocks of 256 with one f32 scale: the element of
        largest magnitude maps to -127 (iscale = -127/max), d = 1/iscale.

All three are written into one layout the kernels share: codes xq (M, K) int8,
per-32 scale xd (M, K/32) (a Q8_K scale is repeated over its 8 sub-blocks),
xm (M, K/32) = scale * sum of the 32 codes, used by formats with a min, and
xs (M, K/32) int32, the sum of the 32 codes (Q4_K's integer min term).
Each row is quantized on its own, so a row's codes never depend on the others.
Codes stay within [-127, 127]; the sign trick in simd_x86 relies on that.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange

from localllm.quant.f16 import round_f16

ACT_Q8_0, ACT_Q8_1, ACT_Q8_K = 0, 1, 2


@njit(inline="always", cache=True)
def _q8_32_row(x, m, xq, xd, xm, xs, with_sum_f16):
    """Q8_0 / Q8_1 over row m of x (M, K) in blocks of 32."""
    K = x.shape[1]
    for b in range(K // 32):
        e = b * 32
        amax = np.float32(0.0)
        for i in range(32):
            amax = max(amax, abs(x[m, e + i]))
        d = amax / np.float32(127.0)
        inv = np.float32(127.0) / amax if amax > 0 else np.float32(0.0)
        s = np.int32(0)
        for i in range(32):
            q = np.int32(np.rint(x[m, e + i] * inv))
            xq[m, e + i] = q
            s = np.int32(s + q)
        xd[m, b] = round_f16(d)
        xs[m, b] = s
        # Q8_1 keeps d * sum as f16 (with the unrounded d); Q8_0 has no sum, so use the exact one
        xm[m, b] = round_f16(d * np.float32(s)) if with_sum_f16 else xd[m, b] * np.float32(s)


@njit(inline="always", cache=True)
def _q8_k_row(x, m, xq, xd, xm, xs):
    """Q8_K over row m of x (M, K) in blocks of 256, expanded to the per-32 layout."""
    K = x.shape[1]
    for sb in range(K // 256):
        e = sb * 256
        amax = np.float32(0.0)
        mx = np.float32(0.0)
        for i in range(256):
            ax = abs(x[m, e + i])
            if ax > amax:  # first element of largest magnitude, with its sign
                amax = ax
                mx = x[m, e + i]
        if amax == 0:
            for i in range(256):
                xq[m, e + i] = 0
            for j in range(8):
                xd[m, sb * 8 + j] = 0.0
                xm[m, sb * 8 + j] = 0.0
                xs[m, sb * 8 + j] = 0
            continue
        iscale = np.float32(-127.0) / mx
        d = np.float32(1.0) / iscale
        for j in range(8):
            s = np.int32(0)
            for i in range(32):
                q = np.int32(np.rint(iscale * x[m, e + j * 32 + i]))
                q = min(q, np.int32(127))
                xq[m, e + j * 32 + i] = q
                s = np.int32(s + q)
            xd[m, sb * 8 + j] = d
            xm[m, sb * 8 + j] = d * np.float32(s)
            xs[m, sb * 8 + j] = s


@njit(inline="always", cache=True)
def _quantize_row(x, m, kind, xq, xd, xm, xs):
    if kind == ACT_Q8_K:
        _q8_k_row(x, m, xq, xd, xm, xs)
    else:
        _q8_32_row(x, m, xq, xd, xm, xs, kind == ACT_Q8_1)


@njit(cache=True)
def quantize_activations(x, kind, xq, xd, xm, xs):
    """Fill xq/xd/xm/xs from x (M, K) float32 in llama.cpp's format `kind` (ACT_*), on this thread."""
    for m in range(x.shape[0]):
        _quantize_row(x, m, kind, xq, xd, xm, xs)


@njit(cache=True)
def _quantize_one_row(x, m, kind, xq, xd, xm, xs):
    # a call, not inlined into the parallel loop: numba's parfor passes on the inlined
    # row code took 14.5 s of a cold start
    _quantize_row(x, m, kind, xq, xd, xm, xs)


@njit(cache=True, parallel=True)
def quantize_activations_par(x, kind, xq, xd, xm, xs):
    """quantize_activations with the rows spread over threads (each row's codes are the same)."""
    for m in prange(x.shape[0]):  # int64: prange's index is unsigned in the parfor, one compile of the callee for both
        _quantize_one_row(x, np.int64(m), kind, xq, xd, xm, xs)


def new_activation_buffers(m: int, k: int):
    """Empty (codes (M, K) int8, scales (M, K/32) f32, scale * sums (M, K/32) f32, code sums (M, K/32) int32)."""
    return (np.empty((m, k), np.int8), np.empty((m, k // 32), np.float32), np.empty((m, k // 32), np.float32),
            np.empty((m, k // 32), np.int32))


# Activation format per weight type code, as llama.cpp pairs them.
ACT_FORMAT = {2: ACT_Q8_0, 3: ACT_Q8_1, 6: ACT_Q8_0, 7: ACT_Q8_1, 8: ACT_Q8_0, 20: ACT_Q8_0,
              10: ACT_Q8_K, 11: ACT_Q8_K, 12: ACT_Q8_K, 13: ACT_Q8_K, 14: ACT_Q8_K, 23: ACT_Q8_K}
