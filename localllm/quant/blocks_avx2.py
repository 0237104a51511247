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

Legacy formats keep llama.cpp's AVX2 float order: one 8-lane accumulator, a
fused multiply-add per block, the lanes summed once (hsum). No fastmath: it
would let LLVM reorder the sums differently in differently shaped loops.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit

from localllm.kernels.fmath import fma32
from localllm.quant.f16 import f16_to_f32
from localllm.quant.simd_x86 import (
    dot_ss,
    dot_ss16,
    dot_us,
    dot_us_scaled,
    fma_acc,
    fzero,
    hsum,
    iadd,
    ihsum4,
    izero,
    load32,
    load_nibbles,
    load_u16,
    load_u32,
    q5_high_bits,
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


# ---- legacy 32-element formats: acc += (d_w * d_x) * lanes, per block ----------


@njit(inline="always", cache=True)
def _q4_0(acc, row, b, x, s):
    o = b * 18  # d f16 | 16 B nibbles
    w = v_subc(load_nibbles(row, o + 2), 8)
    return fma_acc(acc, _half(row, o) * s[b], dot_ss(w, load32(x, b * 32)))


@njit(inline="always", cache=True)
def q4_0_step(st, ra, rb, b, x, s, sm, gs):
    return _q4_0(st[0], ra, b, x, s), _q4_0(st[1], rb, b, x, s)


@njit(inline="always", cache=True)
def _q5_0(acc, row, b, x, s):
    o = b * 22  # d f16 | qh u32 | 16 B nibbles
    w = v_subc(v_or(load_nibbles(row, o + 6), q5_high_bits(load_u32(row, o + 2))), 16)
    return fma_acc(acc, _half(row, o) * s[b], dot_ss(w, load32(x, b * 32)))


@njit(inline="always", cache=True)
def q5_0_step(st, ra, rb, b, x, s, sm, gs):
    return _q5_0(st[0], ra, b, x, s), _q5_0(st[1], rb, b, x, s)


@njit(inline="always", cache=True)
def _q8_0(acc, row, b, x, s):
    o = b * 34  # d f16 | 32 x int8
    return fma_acc(acc, _half(row, o) * s[b], dot_ss(load32(row, o + 2), load32(x, b * 32)))


@njit(inline="always", cache=True)
def q8_0_step(st, ra, rb, b, x, s, sm, gs):
    return _q8_0(st[0], ra, b, x, s), _q8_0(st[1], rb, b, x, s)


# Q4_1: d f16 | m f16 | 16 B nibbles. The min terms m * (d_x * sum x) are summed in
# their own scalar, in block order, and added after the lane sum (llama.cpp's order).


@njit(inline="always", cache=True)
def q4_1_init():
    return fzero(), fzero(), np.float32(0.0), np.float32(0.0)


@njit(inline="always", cache=True)
def _q4_1(acc, row, b, x, s):
    o = b * 20
    return fma_acc(acc, _half(row, o) * s[b], dot_us(load_nibbles(row, o + 4), load32(x, b * 32)))


@njit(inline="always", cache=True)
def q4_1_step(st, ra, rb, b, x, s, sm, gs):
    return (_q4_1(st[0], ra, b, x, s), _q4_1(st[1], rb, b, x, s),
            fma32(_half(ra, b * 20 + 2), sm[b], st[2]), fma32(_half(rb, b * 20 + 2), sm[b], st[3]))


@njit(inline="always", cache=True)
def q4_1_fin(st):
    return hsum(st[0]) + st[2], hsum(st[1]) + st[3]


# ---- K-quants: integer lanes per super-block, then one float step ------------
# Activations are Q8_K, so s holds the super-block scale repeated over its 8 groups.

# Q4_K: d, dmin f16 | 12 B scales/mins | 128 B nibbles. Scaled lanes and the integer
# min term of each 64 elements are exact and meet their float scales once, in the order
# of llama.cpp's repacked Q4_K gemm (its prompt path); out = acc - accm. (Its gemv folds
# whole super-blocks instead; on Gemma 3 the 64-element order keeps every clear argmax
# of the reference, the super-block order lost one.)


@njit(inline="always", cache=True)
def kq_scalar_init():
    return np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)


# A super-block is decoded (_q4_k_weights) then met by each activation row (_q4_k_pass).
# The one-row step decodes per row; the four-row step below decodes once for its four
# rows. Both run _q4_k_pass, so every element's integers and float steps are the same.


@njit(inline="always", cache=True)
def _q4_k_weights(row, o):
    """A super-block's 8 (scale, min) pairs and its 8 nibble vectors (groups 0..7)."""
    sm = (scale_min_k4(row, o + 4, 0), scale_min_k4(row, o + 4, 1), scale_min_k4(row, o + 4, 2),
          scale_min_k4(row, o + 4, 3), scale_min_k4(row, o + 4, 4), scale_min_k4(row, o + 4, 5),
          scale_min_k4(row, o + 4, 6), scale_min_k4(row, o + 4, 7))
    q0, q1, q2, q3 = load32(row, o + 16), load32(row, o + 48), load32(row, o + 80), load32(row, o + 112)
    nib = (v_and(q0, 0xF), v_shr(q0, 4), v_and(q1, 0xF), v_shr(q1, 4),
           v_and(q2, 0xF), v_shr(q2, 4), v_and(q3, 0xF), v_shr(q3, 4))
    return sm, nib


@njit(inline="always", cache=True)
def _q4_k_pass(acc, accm, d, dmin, sm, nib, sb, x, s, gs):
    """One activation row against a decoded super-block: integer lanes per 64 elements, then
    their float steps in order."""
    dx = s[8 * sb]
    dd, dm = d * dx, dmin * dx
    g = 8 * sb
    l0 = iadd(dot_us_scaled(nib[0], load32(x, 32 * g), sm[0][0]),
              dot_us_scaled(nib[1], load32(x, 32 * g + 32), sm[1][0]))
    l1 = iadd(dot_us_scaled(nib[2], load32(x, 32 * g + 64), sm[2][0]),
              dot_us_scaled(nib[3], load32(x, 32 * g + 96), sm[3][0]))
    l2 = iadd(dot_us_scaled(nib[4], load32(x, 32 * g + 128), sm[4][0]),
              dot_us_scaled(nib[5], load32(x, 32 * g + 160), sm[5][0]))
    l3 = iadd(dot_us_scaled(nib[6], load32(x, 32 * g + 192), sm[6][0]),
              dot_us_scaled(nib[7], load32(x, 32 * g + 224), sm[7][0]))
    s0, s1, s2, s3 = ihsum4(l0, l1, l2, l3)
    acc = fma32(np.float32(s0), dd, acc)
    accm = fma32(np.float32(np.int32(sm[0][1]) * gs[g] + np.int32(sm[1][1]) * gs[g + 1]), dm, accm)
    acc = fma32(np.float32(s1), dd, acc)
    accm = fma32(np.float32(np.int32(sm[2][1]) * gs[g + 2] + np.int32(sm[3][1]) * gs[g + 3]), dm, accm)
    acc = fma32(np.float32(s2), dd, acc)
    accm = fma32(np.float32(np.int32(sm[4][1]) * gs[g + 4] + np.int32(sm[5][1]) * gs[g + 5]), dm, accm)
    acc = fma32(np.float32(s3), dd, acc)
    accm = fma32(np.float32(np.int32(sm[6][1]) * gs[g + 6] + np.int32(sm[7][1]) * gs[g + 7]), dm, accm)
    return acc, accm


@njit(inline="always", cache=True)
def _q4_k(acc, accm, row, sb, x, s, gs):
    """One weight row's super-block sb against one activation row."""
    o = sb * 144
    sm, nib = _q4_k_weights(row, o)
    return _q4_k_pass(acc, accm, _half(row, o), _half(row, o + 2), sm, nib, sb, x, s, gs)


# Inlined once, for the tile's remainder rows (decode's single row among them); groups of
# four activation rows go through the call below instead. Five inlined copies of this step
# (four rows and the remainder) took LLVM 92 s to compile.
@njit(inline="always", cache=True)
def q4_k_step(st, ra, rb, sb, x, s, sm, gs):
    a0, m0 = _q4_k(st[0], st[1], ra, sb, x, s, gs)
    a1, m1 = _q4_k(st[2], st[3], rb, sb, x, s, gs)
    return a0, m0, a1, m1


@njit(inline="always", cache=True)
def _q4_k_rows4(st0, st1, st2, st3, i, row, sb, a0, a1, a2, a3):
    """Weight row `row` (state slots 2i, 2i+1) against the four activation rows a0..a3."""
    o = sb * 144
    d, dmin = _half(row, o), _half(row, o + 2)
    sm, nib = _q4_k_weights(row, o)
    r0 = _q4_k_pass(st0[2 * i], st0[2 * i + 1], d, dmin, sm, nib, sb, a0[0], a0[1], a0[3])
    r1 = _q4_k_pass(st1[2 * i], st1[2 * i + 1], d, dmin, sm, nib, sb, a1[0], a1[1], a1[3])
    r2 = _q4_k_pass(st2[2 * i], st2[2 * i + 1], d, dmin, sm, nib, sb, a2[0], a2[1], a2[3])
    r3 = _q4_k_pass(st3[2 * i], st3[2 * i + 1], d, dmin, sm, nib, sb, a3[0], a3[1], a3[3])
    return r0, r1, r2, r3


@njit(cache=True)
def _q4_k_step4(st0, st1, st2, st3, ra, rb, sb, a0, a1, a2, a3):
    a = _q4_k_rows4(st0, st1, st2, st3, 0, ra, sb, a0, a1, a2, a3)
    b = _q4_k_rows4(st0, st1, st2, st3, 1, rb, sb, a0, a1, a2, a3)
    return ((a[0][0], a[0][1], b[0][0], b[0][1]), (a[1][0], a[1][1], b[1][0], b[1][1]),
            (a[2][0], a[2][1], b[2][0], b[2][1]), (a[3][0], a[3][1], b[3][0], b[3][1]))


@njit(inline="always", cache=True)
def q4_k_step4(step, st0, st1, st2, st3, ra, rb, sb, a0, a1, a2, a3):
    """gemm_tiles' four-row step for Q4_K (`step` unused: the call above has its own)."""
    return _q4_k_step4(st0, st1, st2, st3, ra, rb, sb, a0, a1, a2, a3)


@njit(inline="always", cache=True)
def kq_scalar_fin(st):
    return st[0] - st[1], st[2] - st[3]


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
