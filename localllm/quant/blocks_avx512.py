"""Per-format block arithmetic for the AVX-512 VNNI path (see blocks_avx2 for the contract).

One 512-bit register holds the AVX2 path's 8-lane vector for weight row a (low
half) and for row b (high half), so a step does both rows' work in one set of
instructions and every element gets exactly the AVX2 path's integers and
float operations:
  * signed codes (Q4_0, Q5_0, Q8_0): vpdpbusd multiplies unsigned by signed bytes,
    so the activations go in as x + 128 (x ^ 0x80) and the weights' own lane sums
    times -128, computed once per weight block, start the accumulator;
  * Q4_1's codes are unsigned already: one vpdpbusd;
  * Q4_K's lanes carry 6-bit integer scales: vpmaddubsw + vpmaddwd, as on AVX2.
Formats not here (Q5_K, Q6_K) run blocks_avx2's code on this path.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit

from localllm.kernels.fmath import fma32
from localllm.quant.blocks_avx2 import _half, kq_scalar_fin, kq_scalar_init, scale_min_k4  # noqa: F401
from localllm.quant.simd_avx512 import (
    bcast32,
    dot_us_scaled2,
    dpbusd,
    fma16,
    fmul_s,
    fzero16,
    halves_f32,
    hsum2,
    iadd16,
    ihsum2,
    izero16,
    load32x2,
    nibbles32x2,
    q5_high_bits2,
    scales16x2,
    signed_dot_bias,
    w_and,
    w_or,
    w_shr,
    w_subc,
    w_xorc,
)
from localllm.quant.simd_x86 import load_u32


@njit(inline="always", cache=True)
def vec_init():
    return fzero16()


@njit(inline="always", cache=True)
def vec_fin(st):
    return hsum2(st)


@njit(inline="always", cache=True)
def _signed_block(acc, w, da, db, x, s, b):
    """acc + (d_w * d_x) * (w . x) for block b of both rows; w: signed codes (I8x64)."""
    lanes = dpbusd(signed_dot_bias(w), w_xorc(bcast32(x, b * 32), 0x80), w)
    return fma16(acc, fmul_s(halves_f32(da, db), s[b]), lanes)


@njit(inline="always", cache=True)
def q4_0_step(st, ra, rb, b, x, s, sm, gs):
    o = b * 18  # d f16 | 16 B nibbles
    w = w_subc(nibbles32x2(ra, o + 2, rb, o + 2), 8)
    return _signed_block(st, w, _half(ra, o), _half(rb, o), x, s, b)


@njit(inline="always", cache=True)
def q5_0_step(st, ra, rb, b, x, s, sm, gs):
    o = b * 22  # d f16 | qh u32 | 16 B nibbles
    high = q5_high_bits2(load_u32(ra, o + 2), load_u32(rb, o + 2))
    w = w_subc(w_or(nibbles32x2(ra, o + 6, rb, o + 6), high), 16)
    return _signed_block(st, w, _half(ra, o), _half(rb, o), x, s, b)


@njit(inline="always", cache=True)
def q8_0_step(st, ra, rb, b, x, s, sm, gs):
    o = b * 34  # d f16 | 32 x int8
    return _signed_block(st, load32x2(ra, o + 2, rb, o + 2), _half(ra, o), _half(rb, o), x, s, b)


@njit(inline="always", cache=True)
def q4_1_init():
    return fzero16(), np.float32(0.0), np.float32(0.0)


@njit(inline="always", cache=True)
def q4_1_step(st, ra, rb, b, x, s, sm, gs):
    o = b * 20  # d f16 | m f16 | 16 B nibbles
    lanes = dpbusd(izero16(), nibbles32x2(ra, o + 4, rb, o + 4), bcast32(x, b * 32))
    acc = fma16(st[0], fmul_s(halves_f32(_half(ra, o), _half(rb, o)), s[b]), lanes)
    return acc, fma32(_half(ra, o + 2), sm[b], st[1]), fma32(_half(rb, o + 2), sm[b], st[2])


@njit(inline="always", cache=True)
def q4_1_fin(st):
    a, b = hsum2(st[0])
    return a + st[1], b + st[2]


@njit(inline="always", cache=True)
def q4_k_step(st, ra, rb, sb, x, s, sm, gs):
    o = sb * 144  # d, dmin f16 | 12 B scales/mins | 128 B nibbles
    dx = s[8 * sb]
    acc_a, accm_a, acc_b, accm_b = st
    for c in range(4):
        q = load32x2(ra, o + 16 + 32 * c, rb, o + 16 + 32 * c)  # groups 2c (low nibbles), 2c+1 (high)
        g = 8 * sb + 2 * c
        sa0, ma0 = scale_min_k4(ra, o + 4, 2 * c)
        sa1, ma1 = scale_min_k4(ra, o + 4, 2 * c + 1)
        sb0, mb0 = scale_min_k4(rb, o + 4, 2 * c)
        sb1, mb1 = scale_min_k4(rb, o + 4, 2 * c + 1)
        lanes = iadd16(dot_us_scaled2(w_and(q, 0xF), bcast32(x, 32 * g), scales16x2(sa0, sb0)),
                       dot_us_scaled2(w_shr(q, 4), bcast32(x, 32 * g + 32), scales16x2(sa1, sb1)))
        ima = ma0 * gs[g] + ma1 * gs[g + 1]
        imb = mb0 * gs[g] + mb1 * gs[g + 1]
        la, lb = ihsum2(lanes)  # each 64 elements meet their float scales (blocks_avx2's order)
        acc_a = fma32(np.float32(la), _half(ra, o) * dx, acc_a)
        accm_a = fma32(np.float32(ima), _half(ra, o + 2) * dx, accm_a)
        acc_b = fma32(np.float32(lb), _half(rb, o) * dx, acc_b)
        accm_b = fma32(np.float32(imb), _half(rb, o + 2) * dx, accm_b)
    return acc_a, accm_a, acc_b, accm_b
