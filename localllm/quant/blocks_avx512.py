"""Per-format block arithmetic for the AVX-512 VNNI path (see blocks_avx2 for the contract).

One 512-bit register holds the AVX2 path's 8-lane vector for weight row a (low
half) and for row b (high half), so a step does both rows' work in one set of
instructions and every element gets exactly the AVX2 path's integers and
float operations.
In prompt chunks (16 rows or more) Q4_K and Q6_K take
ROWS activation rows per weight block (the "wide" functions below, driven by
gemm_tiles.tile_wide). For fewer rows the K-quants run blocks_avx2's code on
this path.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit

from localllm.quant.blocks_avx2 import _half
from localllm.quant.simd_avx512 import (
    fzero16,
    halves_f32,
    hsum2,
    izero16,
    load32x2,
    w_or,
    w_andc,
    w_shrc,
    w_shlc,
    scales16x2,
    scale_pairs,
    rows_madd,
    rows_scale,
)


@njit(inline="always", cache=True)
def vec_init():
    return fzero16()


@njit(inline="always", cache=True)
def vec_fin(st):
    return hsum2(st)


# ---- many activation rows per weight-row pair (gemm_tiles.tile_wide) -----------------
# In prompt chunks one decode of a weight block serves ROWS activation rows instead of
# four. The item first copies its activation rows into a block-major scratch (the
# per-format functions below), with block b of every row side by side, so one
# pointer reaches all ROWS rows' block b. simd_avx512's rows_* intrinsics emit a
# group's rows.

ROWS = 16


@njit(inline="always", cache=True)
def block_major(a, m0, n, per):
    """Rows m0 .. m0+n-1 of a (M, nb * per), block-major: (nb * n * per,) with row i's
    block b at (b * n + i) * per, so the rows' block b lie side by side."""
    nb = a.shape[1] // per
    out = np.empty(nb * n * per, a.dtype)
    for i in range(n):
        row = a[m0 + i]
        for b in range(nb):
            o = (b * n + i) * per
            for j in range(per):
                out[o + j] = row[b * per + j]
    return out


@njit(inline="always", cache=True)
def wide_init():
    z = fzero16()
    return z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z


@njit(inline="always", cache=True)
def wide_fin(st, j):
    """(row a, row b) outputs of the group's row j."""
    return hsum2(st[j])


# Q6_K, ROWS activation rows per super-block pass. Codes go in unsigned (0..63, the
# signed code + 32); rows_madd takes 32 * (each byte pair's activation sum) off the
# pair sums, weights them by the 16-element scales, and adds into the super-block's
# integer lanes: blocks_avx2._q6_k's lanes, exactly. Then one float step per
# super-block, as there.


@njit(inline="always", cache=True)
def wide_acts_k(xq, xd, xm, xs, m0, n):
    """Q6_K's scratch of rows m0 .. m0+n-1, block-major: codes, 32 * each code pair's sum
    (int16, 16 per block) and scales."""
    xk = block_major(xq, m0, n, 32)
    xp = np.empty(xk.shape[0] // 2, np.int16)
    for t in range(xp.shape[0]):
        xp[t] = np.int16(32 * (np.int32(xk[2 * t]) + np.int32(xk[2 * t + 1])))
    return xk, xp, block_major(xd, m0, n, 1)


@njit(inline="always", cache=True)
def wide_init_k():
    z = izero16()
    return z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z


@njit(inline="always", cache=True)
def q6_k_codes(ql, qh, part):
    """Unsigned codes of one 32-element group of both rows: ql the 32 bytes holding its low
    bits (low nibbles for parts 0, 1, high for 2, 3), qh the 32 bytes of high bit pairs."""
    lo = w_andc(ql, 0xF) if part < 2 else w_shrc(ql, 4)
    return w_or(lo, w_shlc(w_andc(w_shrc(qh, 2 * part), 3), 4))


@njit(inline="always", cache=True)
def q6_k_wide_step(codes, st, ra, rb, sb, acts, n, i0):
    """Super-block sb for ROWS activation rows from scratch row i0 (wide_acts_k's acts)."""
    xk, xp, ds = acts
    o = sb * 210  # 128 B low bits | 64 B high bits | 16 int8 scales | d f16
    sc = scales16x2(ra, o + 192, rb, o + 192)
    isum = wide_init_k()
    for h in range(2):
        qh = load32x2(ra, o + 128 + 32 * h, rb, o + 128 + 32 * h)
        ql0 = load32x2(ra, o + 64 * h, rb, o + 64 * h)
        ql1 = load32x2(ra, o + 64 * h + 32, rb, o + 64 * h + 32)
        g = 8 * sb + 4 * h
        isum = rows_madd(isum, codes(ql0, qh, 0), scale_pairs(sc, 4 * h), xk, xp, g * n + i0)
        isum = rows_madd(isum, codes(ql1, qh, 1), scale_pairs(sc, 4 * h + 1), xk, xp, (g + 1) * n + i0)
        isum = rows_madd(isum, codes(ql0, qh, 2), scale_pairs(sc, 4 * h + 2), xk, xp, (g + 2) * n + i0)
        isum = rows_madd(isum, codes(ql1, qh, 3), scale_pairs(sc, 4 * h + 3), xk, xp, (g + 3) * n + i0)
    dw = halves_f32(_half(ra, o + 208), _half(rb, o + 208))
    return rows_scale(st, isum, dw, ds, 8 * sb * n + i0)  # the super-block's scale, repeated over its blocks
