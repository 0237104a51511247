"""Numba dequantization of GGUF rows, bit-exact with `gguf.quants.dequantize`.

Every kernel takes one weight row as raw bytes (row_bytes,) uint8 and writes
(K,) float32. `dequant_row` switches on the GGML type id so that a single
compiled kernel serves every format (few specializations, one cache entry).

No fastmath here: the reference computes e.g. `d * q + m` as two rounded f32
operations, and a fused multiply-add would change the last bit.
"""

import localllm._numba_setup  # noqa: F401  (threading layer + cache dir first)

import numpy as np
from numba import njit, prange

from localllm.quant.f16 import bf16_to_f32, f16_to_f32
from localllm.quant.formats import KVALUES

# GGML type ids, as plain ints so numba folds the switch below.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, BF16 = 10, 11, 12, 13, 14, 20, 23, 30


@njit(inline="always", cache=True)
def _u16(src, o):
    """Little-endian uint16 at byte offset o."""
    return np.uint16(np.int32(src[o]) | (np.int32(src[o + 1]) << 8))


@njit(inline="always", cache=True)
def _half(src, o):
    return f16_to_f32(_u16(src, o))


@njit(inline="always", cache=True)
def k_scale_min(sc, j):
    """6-bit scale and min of sub-block j (0..7) from Q4_K/Q5_K's 12 packed bytes."""
    if j < 4:
        return np.int32(sc[j] & 63), np.int32(sc[j + 4] & 63)
    s = (np.int32(sc[j + 4]) & 0xF) | ((np.int32(sc[j - 4]) >> 6) << 4)
    m = (np.int32(sc[j + 4]) >> 4) | ((np.int32(sc[j]) >> 6) << 4)
    return np.int32(s), np.int32(m)


@njit(inline="always", cache=True)
def q3k_scale(sc, i):
    """Signed 6-bit scale of 16-elem group i (0..15) from Q3_K's 12 packed bytes."""
    if i < 8:
        lo = np.int32(sc[i]) & 0xF
    else:
        lo = np.int32(sc[i - 8]) >> 4
    hi = (np.int32(sc[8 + (i & 3)]) >> (2 * (i >> 2))) & 3
    return np.int32((lo | (hi << 4)) - 32)


@njit(cache=True)
def _row_f32(src, dst):
    dst[:] = src.view(np.float32)


@njit(cache=True)
def _row_f16(src, dst):
    h = src.view(np.uint16)  # (K,)
    for i in range(dst.shape[0]):
        dst[i] = f16_to_f32(h[i])


@njit(cache=True)
def _row_bf16(src, dst):
    h = src.view(np.uint16)  # (K,)
    for i in range(dst.shape[0]):
        dst[i] = bf16_to_f32(h[i])


@njit(cache=True)
def _row_q4_0(src, dst):
    for b in range(dst.shape[0] // 32):
        o, e = b * 18, b * 32
        d = _half(src, o)
        for l in range(16):
            q = np.int32(src[o + 2 + l])
            dst[e + l] = d * np.float32(np.int32(q & 0xF) - 8)
            dst[e + 16 + l] = d * np.float32(np.int32(q >> 4) - 8)


@njit(cache=True)
def _row_q4_1(src, dst):
    for b in range(dst.shape[0] // 32):
        o, e = b * 20, b * 32
        d, m = _half(src, o), _half(src, o + 2)
        for l in range(16):
            q = np.int32(src[o + 4 + l])
            dst[e + l] = d * np.float32(q & 0xF) + m
            dst[e + 16 + l] = d * np.float32(q >> 4) + m


@njit(cache=True)
def _row_q5_0(src, dst):
    for b in range(dst.shape[0] // 32):
        o, e = b * 22, b * 32
        d = _half(src, o)
        qh = np.uint32(_u16(src, o + 2)) | (np.uint32(_u16(src, o + 4)) << np.uint32(16))
        for l in range(16):
            q = np.int32(src[o + 6 + l])
            h0 = np.int32((qh >> np.uint32(l)) & np.uint32(1)) << 4
            h1 = np.int32((qh >> np.uint32(l + 16)) & np.uint32(1)) << 4
            dst[e + l] = d * np.float32((np.int32(q & 0xF) | h0) - 16)
            dst[e + 16 + l] = d * np.float32((np.int32(q >> 4) | h1) - 16)


@njit(cache=True)
def _row_q5_1(src, dst):
    for b in range(dst.shape[0] // 32):
        o, e = b * 24, b * 32
        d, m = _half(src, o), _half(src, o + 2)
        qh = np.uint32(_u16(src, o + 4)) | (np.uint32(_u16(src, o + 6)) << np.uint32(16))
        for l in range(16):
            q = np.int32(src[o + 8 + l])
            h0 = np.int32((qh >> np.uint32(l)) & np.uint32(1)) << 4
            h1 = np.int32((qh >> np.uint32(l + 16)) & np.uint32(1)) << 4
            dst[e + l] = d * np.float32(np.int32(q & 0xF) | h0) + m
            dst[e + 16 + l] = d * np.float32(np.int32(q >> 4) | h1) + m


@njit(cache=True)
def _row_q8_0(src, dst):
    for b in range(dst.shape[0] // 32):
        o, e = b * 34, b * 32
        d = _half(src, o)
        q = src[o + 2 : o + 34].view(np.int8)  # (32,)
        for l in range(32):
            dst[e + l] = np.float32(q[l]) * d


@njit(cache=True)
def _row_q2_k(src, dst):
    for b in range(dst.shape[0] // 256):
        o, e = b * 84, b * 256
        d, dmin = _half(src, o + 80), _half(src, o + 82)
        for j in range(256):
            sc = np.int32(src[o + j // 16])
            half, s, l = j // 128, (j % 128) // 32, j % 32
            q = (np.int32(src[o + 16 + half * 32 + l]) >> (2 * s)) & 3
            dl = d * np.float32(sc & 0xF)
            ml = dmin * np.float32(sc >> 4)
            dst[e + j] = dl * np.float32(q) - ml


@njit(cache=True)
def _row_q3_k(src, dst):
    for b in range(dst.shape[0] // 256):
        o, e = b * 110, b * 256
        d = _half(src, o + 108)
        sc = src[o + 96 : o + 108]  # (12,)
        for j in range(256):
            half, s, l = j // 128, (j % 128) // 32, j % 32
            lo = (np.int32(src[o + 32 + half * 32 + l]) >> (2 * s)) & 3
            hbit = (np.int32(src[o + l]) >> (j // 32)) & 1
            q = lo - (0 if hbit else 4)
            dst[e + j] = (d * np.float32(q3k_scale(sc, j // 16))) * np.float32(q)


@njit(cache=True)
def _row_q4_k(src, dst):
    for b in range(dst.shape[0] // 256):
        o, e = b * 144, b * 256
        d, dmin = _half(src, o), _half(src, o + 2)
        sc = src[o + 4 : o + 16]  # (12,)
        for j in range(8):
            s, m = k_scale_min(sc, j)
            ds, dm = d * np.float32(s), dmin * np.float32(m)
            base, shift = o + 16 + (j // 2) * 32, 4 * (j & 1)
            for l in range(32):
                q = (np.int32(src[base + l]) >> shift) & 0xF
                dst[e + j * 32 + l] = ds * np.float32(q) - dm


@njit(cache=True)
def _row_q5_k(src, dst):
    for b in range(dst.shape[0] // 256):
        o, e = b * 176, b * 256
        d, dmin = _half(src, o), _half(src, o + 2)
        sc = src[o + 4 : o + 16]  # (12,)
        for j in range(8):
            s, m = k_scale_min(sc, j)
            ds, dm = d * np.float32(s), dmin * np.float32(m)
            base, shift = o + 48 + (j // 2) * 32, 4 * (j & 1)
            for l in range(32):
                q = ((np.int32(src[base + l]) >> shift) & 0xF) | (((np.int32(src[o + 16 + l]) >> j) & 1) << 4)
                dst[e + j * 32 + l] = ds * np.float32(q) - dm


@njit(cache=True)
def _row_q6_k(src, dst):
    for b in range(dst.shape[0] // 256):
        o, e = b * 210, b * 256
        d = _half(src, o + 208)
        sc = src[o + 192 : o + 208].view(np.int8)  # (16,)
        for j in range(256):
            h, s, l = j // 128, (j % 128) // 32, j % 32
            ql = np.int32(src[o + 64 * h + 32 * (s & 1) + l])
            lo = (ql >> 4) if s >= 2 else (ql & 0xF)
            hi = (np.int32(src[o + 128 + 32 * h + l]) >> (2 * s)) & 3
            q = np.int32(lo | (hi << 4)) - 32
            dst[e + j] = (d * np.float32(sc[j // 16])) * np.float32(q)


@njit(cache=True)
def _row_iq4_nl(src, dst):
    for b in range(dst.shape[0] // 32):
        o, e = b * 18, b * 32
        d = _half(src, o)
        for l in range(16):
            q = np.int32(src[o + 2 + l])
            dst[e + l] = d * np.float32(KVALUES[q & 0xF])
            dst[e + 16 + l] = d * np.float32(KVALUES[q >> 4])


@njit(cache=True)
def _row_iq4_xs(src, dst):
    for b in range(dst.shape[0] // 256):
        o, e = b * 136, b * 256
        d = _half(src, o)
        sh = np.int32(_u16(src, o + 2))
        for j in range(8):
            lo = (np.int32(src[o + 4 + j // 2]) >> (4 * (j & 1))) & 0xF
            hi = (sh >> (2 * j)) & 3
            dl = d * np.float32((lo | (hi << 4)) - 32)
            base = o + 8 + 16 * j
            for l in range(16):
                q = np.int32(src[base + l])
                dst[e + 32 * j + l] = dl * np.float32(KVALUES[q & 0xF])
                dst[e + 32 * j + 16 + l] = dl * np.float32(KVALUES[q >> 4])


# Weight type code -> its one-row dequantizer (the branches of dequant_row).
ROW_KERNELS = {F32: _row_f32, F16: _row_f16, BF16: _row_bf16, Q4_0: _row_q4_0, Q4_1: _row_q4_1, Q5_0: _row_q5_0,
               Q5_1: _row_q5_1, Q8_0: _row_q8_0, Q2_K: _row_q2_k, Q3_K: _row_q3_k, Q4_K: _row_q4_k,
               Q5_K: _row_q5_k, Q6_K: _row_q6_k, IQ4_NL: _row_iq4_nl, IQ4_XS: _row_iq4_xs}


@njit(cache=True)
def dequant_row(code, src, dst):
    """Dequantize one row: src (row_bytes,) uint8 -> dst (K,) float32."""
    if code == F32:
        _row_f32(src, dst)
    elif code == F16:
        _row_f16(src, dst)
    elif code == BF16:
        _row_bf16(src, dst)
    elif code == Q4_0:
        _row_q4_0(src, dst)
    elif code == Q4_1:
        _row_q4_1(src, dst)
    elif code == Q5_0:
        _row_q5_0(src, dst)
    elif code == Q5_1:
        _row_q5_1(src, dst)
    elif code == Q8_0:
        _row_q8_0(src, dst)
    elif code == Q2_K:
        _row_q2_k(src, dst)
    elif code == Q3_K:
        _row_q3_k(src, dst)
    elif code == Q4_K:
        _row_q4_k(src, dst)
    elif code == Q5_K:
        _row_q5_k(src, dst)
    elif code == Q6_K:
        _row_q6_k(src, dst)
    elif code == IQ4_NL:
        _row_iq4_nl(src, dst)
    elif code == IQ4_XS:
        _row_iq4_xs(src, dst)
    else:
        raise ValueError("unsupported GGML type id")


@njit(parallel=True, cache=True)
def dequant_rows(raw, code, r0, out):
    """out (T, K) float32 <- rows r0 .. r0+T of raw (N, row_bytes) uint8."""
    for i in prange(out.shape[0]):
        dequant_row(code, raw[r0 + i], out[i])
