"""Per-format block arithmetic for the AVX2 path, two weight rows at a time.

Each format is three inline functions that the tiled matmul driver (gemm_tiles)
calls for one (weight-row pair, activation row):
    init()                                  -> state
    step(state, ra, rb, u, x, s, sm, gs)    -> state after unit u (a 32-block, or
                                               a 256-super-block for K-quants)
    fin(state)                              -> (out for row a, out for row b)
ra, rb: the two weight rows (row_bytes,) uint8; x (K,) int8 activation codes;
s, sm (K/32,) f32 scales and scale * code sums; gs (K/32,) int32 code sums.

This is the one arithmetic of a matmul element on this path: whatever M is,
however the rows are tiled, an element's integer lanes, its fused multiply-adds
and its final lane sum happen in this order. The integers are exact, so any
instruction sequence that yields the same 8 int32 lanes per 32-block (the
AVX-512 path's vpdpbusd does) gives the same floats.

Q4_0, Q4_1, Q5_0, Q8_0 and Q4_K are not here: they run the row-lane arithmetic (row_lanes.py).
The formats here keep an 8-lane accumulator and sum its lanes once (hsum), as
llama.cpp's AVX2 code does. No fastmath: it
would let LLVM reorder the sums differently in differently shaped loops.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit

from localllm.kernels.fmath import fma32
from localllm.quant.f16 import f16_to_f32
from localllm.quant.simd_x86 import (
    dot_ss16,
    dot_us,
    fma_acc,
    fzero,
    hsum,
    iadd,
    izero,
    load32,
    load_u16,
    v_and,
    v_or,
    v_shl,
    v_shr,
    v_subc,
)


@njit(inline="always", cache=True)
def _half(row, o):
    return f16_to_f32(load_u16(row, o))


@njit(inline="always", cache=True)
def scale_min_k4(row, o, j):
    """Q4_K/Q5_K 6-bit scale and min of sub-block j; the 12 packed bytes start at row[o]."""
    if j < 4:
        return np.int32(row[o + j]) & 63, np.int32(row[o + j + 4]) & 63
    a, b, c = np.int32(row[o + j + 4]), np.int32(row[o + j - 4]), np.int32(row[o + j])
    return (a & 0xF) | ((b >> 6) << 4), (a >> 4) | ((c >> 6) << 4)


@njit(inline="always", cache=True)
def vec_init():
    return fzero(), fzero()


@njit(inline="always", cache=True)
def vec_fin(st):
    return hsum(st[0]), hsum(st[1])


# ---- K-quants: integer lanes per super-block, then one float step ------------
# Activations are Q8_K, so s holds the super-block scale repeated over its 8 groups.

# Q5_K: d, dmin f16 | 12 B scales/mins | 32 B high bits | 128 B nibbles. Two 8-lane
# accumulators (even and odd groups), a fused multiply-add per group by d * sc * d_x;
# the min term is an exact integer per super-block, scaled once by dmin * d_x.


@njit(inline="always", cache=True)
def q5_k_init():
    return fzero(), fzero(), np.float32(0.0), fzero(), fzero(), np.float32(0.0)


@njit(inline="always", cache=True)
def _q5_k(a0, a1, accm, row, sb, x, s, gs):
    o = sb * 176
    d, dx = _half(row, o), s[8 * sb]
    qh = load32(row, o + 16)  # bit j of byte l: fifth bit of sub-block j, element l
    imin = np.int32(0)
    for c in range(4):
        q = load32(row, o + 48 + 32 * c)
        g = 8 * sb + 2 * c
        lo = v_or(v_and(q, 0xF), v_shl(v_and(v_shr(qh, 2 * c), 1), 4))
        hi = v_or(v_shr(q, 4), v_shl(v_and(v_shr(qh, 2 * c + 1), 1), 4))
        sc0, mn0 = scale_min_k4(row, o + 4, 2 * c)
        sc1, mn1 = scale_min_k4(row, o + 4, 2 * c + 1)
        a0 = fma_acc(a0, d * np.float32(sc0) * dx, dot_us(lo, load32(x, 32 * g)))
        a1 = fma_acc(a1, d * np.float32(sc1) * dx, dot_us(hi, load32(x, 32 * g + 32)))
        imin += mn0 * gs[g] + mn1 * gs[g + 1]
    accm = fma32(np.float32(imin), _half(row, o + 2) * dx, accm)
    return a0, a1, accm


@njit(inline="always", cache=True)
def q5_k_step(st, ra, rb, sb, x, s, sm, gs):
    a0, a1, am = _q5_k(st[0], st[1], st[2], ra, sb, x, s, gs)
    b0, b1, bm = _q5_k(st[3], st[4], st[5], rb, sb, x, s, gs)
    return a0, a1, am, b0, b1, bm


@njit(inline="always", cache=True)
def q5_k_fin(st):
    return (hsum(st[0]) + hsum(st[1])) - st[2], (hsum(st[3]) + hsum(st[4])) - st[5]


# Q6_K: 128 B low 4 bits | 64 B high 2 bits | 16 int8 scales | d f16. Codes - 32 meet
# the activations; lanes are weighted by the int8 scales per 16 elements, summed as
# integers over the super-block, then one fused multiply-add by d * d_x.


@njit(inline="always", cache=True)
def _q6_k(acc, row, sb, x, s):
    o = sb * 210
    sc = row.view(np.int8)  # int8 scales live at o + 192 of each block
    isum = izero()
    for h in range(2):
        qh = load32(row, o + 128 + 32 * h)
        ql0 = load32(row, o + 64 * h)
        ql1 = load32(row, o + 64 * h + 32)
        for k in range(0, 4, 2):  # 32-elem groups k (from ql0) and k+1 (from ql1)
            lo0 = v_shr(ql0, 4) if k >= 2 else v_and(ql0, 0xF)
            lo1 = v_shr(ql1, 4) if k >= 2 else v_and(ql1, 0xF)
            w0 = v_subc(v_or(lo0, v_shl(v_and(v_shr(qh, 2 * k), 3), 4)), 32)
            w1 = v_subc(v_or(lo1, v_shl(v_and(v_shr(qh, 2 * k + 2), 3), 4)), 32)
            g = 8 * sb + 4 * h + k
            i = o + 192 + 8 * h + 2 * k  # two int8 scales per 32-elem group
            isum = iadd(isum, dot_ss16(w0, load32(x, 32 * g), np.int32(sc[i]), np.int32(sc[i + 1])))
            isum = iadd(isum, dot_ss16(w1, load32(x, 32 * g + 32), np.int32(sc[i + 2]), np.int32(sc[i + 3])))
    return fma_acc(acc, s[8 * sb] * _half(row, o + 208), isum)


@njit(inline="always", cache=True)
def q6_k_step(st, ra, rb, sb, x, s, sm, gs):
    return _q6_k(st[0], ra, sb, x, s), _q6_k(st[1], rb, sb, x, s)
