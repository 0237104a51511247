"""Per-format block arithmetic for the AVX-512 VNNI path (see blocks_avx2 for the contract).

One 512-bit register holds the AVX2 path's 8-lane vector for weight row a (low
half) and for row b (high half), so a step does both rows' work in one set of
instructions and every element gets exactly the AVX2 path's integers and
float operations:
  * signed codes (Q4_0, Q5_0, Q8_0): vpdpbusd multiplies unsigned by signed bytes,
    so the activations go in as x + 128 (x ^ 0x80) and the weights' own lane sums
    times -128, computed once per weight block, start the accumulator;
  * Q4_1's codes are unsigned already: one vpdpbusd;
Formats not here (the K-quants) run blocks_avx2's code on this path: their work
is in scale decoding and per-64 horizontal sums, which 512-bit registers do not
shorten.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit

from localllm.kernels.fmath import fma32
from localllm.quant.blocks_avx2 import _half
from localllm.quant.simd_avx512 import (
    bcast32,
    dpbusd,
    fma16,
    fmul_s,
    fzero16,
    halves_f32,
    hsum2,
    izero16,
    load32x2,
    nibbles32x2,
    q5_high_bits2,
    signed_dot_bias,
    w_or,
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
