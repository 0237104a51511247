"""The row-lane matmul driver: one vector lane per weight row, 16 rows per group.

out[m, r] = dot(dequant(raw[r]), x[m]) for the formats whose blocks simd_rows16
decodes. Per output element the arithmetic is, for every unit b in order (a
32-element block; for Q4_K a 64-element part of two sub-blocks):
    i   = exact integer dot of the stored codes with the activation codes,
          less c * (the activation block's code sum)      (c: the format's offset;
          Q4_K: each sub-block's dot times its 6-bit scale, summed)
    acc = fma(d_w[r, b] * d_x[m, b], float(i), acc)
and for the formats with a min, a second fused multiply-add:
    Q4_1: acc = fma(m_w[r, b], d_x[m, b] * (code sum), acc)
    Q4_K: acc = fma(-dmin_w * d_x, float(the exact integer sum of mins x code sums), acc)
the same whichever loop below computes it and whichever path (avx2, avx512) runs
it: a row's result never depends on M, on the tiling or on the other rows
(DEVELOPERS.md, "one arithmetic per row").

Loops: work items are (a tile of 16-row groups, a chunk of M_CHUNK activation
rows). A prompt chunk's rows keep their 16-lane accumulators in a scratch of the
item and meet each decoded weight block in turn; few rows (decode, small batches)
keep theirs in registers, four rows or one at a time.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit

from localllm.quant.gemm_tiles import M_CHUNK
from localllm.quant.simd_rows16 import GROUP, fload, fstore, fzero, q4_k_mins, row_fma, row_step, store_lanes
from localllm.quant.simd_x86 import prefetch

# Items of fewer rows than this keep their accumulators in registers and ask for the
# next group's lines ahead (their weights stream from memory); longer chunks reuse
# each decoded block for all their rows.
SCRATCH_ROWS = 8


@njit(inline="always", cache=True)
def _prefetch_next(flat, r, b, units, row_bytes):
    """Ask for the 1/units-th part of the next group (rows r+16 .. r+31, contiguous in
    memory) that matches unit b: over a group's units the whole next group is asked
    for, in memory order. 16 separate rows streamed side by side defeat the hardware
    prefetchers; one sequential walk does not. Past the array's end prefetch is a no-op."""
    size = (GROUP * row_bytes + units - 1) // units  # a group's bytes / units
    o = (r + GROUP) * row_bytes + b * size
    for e in range(0, size, 64):
        prefetch(flat, o + e)


@njit(inline="always", cache=True)
def scale_step(acc, w, isum, c, xd, xm, xs, m, b):
    """The float step of a format with one scale per block (w[-1]) and codes offset by c."""
    return row_step(acc, isum, c * xs[m, b], w[-1], xd[m, b])


@njit(inline="always", cache=True)
def scale_min_step(acc, w, isum, c, xd, xm, xs, m, b):
    """Q4_1's float step: w ends in (scales, mins); an element is d * code + m."""
    return row_fma(row_step(acc, isum, 0, w[-2], xd[m, b]), w[-1], xm[m, b])


@njit(inline="always", cache=True)
def k4_step(acc, w, isum, c, xd, xm, xs, m, u):
    """Q4_K's float steps for 64-element part u (sub-blocks 2u, 2u+1; the Q8_K scale is
    repeated per 32): d * d_x * isum, then -dmin * d_x * (its exact min term)."""
    dx = xd[m, 2 * u]
    acc = row_step(acc, isum, 0, w[-2], dx)
    return row_step(acc, q4_k_mins(w, xs[m, 2 * u], xs[m, 2 * u + 1]), 0, w[-1], dx)


@njit(inline="always", cache=True)
def group_range(n_rows, n_tiles, t):
    """Rows [r0, r1) of row tile t: whole 16-row groups (the last one may be short)."""
    groups = (n_rows + GROUP - 1) // GROUP
    size = (groups + n_tiles - 1) // n_tiles
    return min(n_rows, t * size * GROUP), min(n_rows, (t + 1) * size * GROUP)


@njit(inline="always", cache=True)
def _chunk_rows(fmt, flat, units, row_bytes, raw, xq, xd, xm, xs, out, acc, r, m0, m1):
    """Rows [m0, m1) of group r with their accumulators in acc ((m1 - m0) * 16): each
    weight block is decoded once for all of them."""
    group, dot, c, step, per = fmt
    for m in range(m0, m1):
        fstore(acc, (m - m0) * GROUP, fzero())
    for b in range(units):
        _prefetch_next(flat, r, b, units, row_bytes)
        w = group(raw, r, b)
        for m in range(m0, m1):
            i = (m - m0) * GROUP
            fstore(acc, i, step(fload(acc, i), w, dot(w, xq[m], b * per), c, xd, xm, xs, m, b))
    for m in range(m0, m1):
        store_lanes(out, m, r, fload(acc, (m - m0) * GROUP))


@njit(inline="always", cache=True)
def _four_rows(fmt, flat, units, row_bytes, raw, xq, xd, xm, xs, out, r, m):
    """Rows m .. m+3 of group r, accumulators in registers."""
    group, dot, c, step, per = fmt
    a0, a1, a2, a3 = fzero(), fzero(), fzero(), fzero()
    for b in range(units):
        _prefetch_next(flat, r, b, units, row_bytes)
        w = group(raw, r, b)
        o = b * per
        a0 = step(a0, w, dot(w, xq[m], o), c, xd, xm, xs, m, b)
        a1 = step(a1, w, dot(w, xq[m + 1], o), c, xd, xm, xs, m + 1, b)
        a2 = step(a2, w, dot(w, xq[m + 2], o), c, xd, xm, xs, m + 2, b)
        a3 = step(a3, w, dot(w, xq[m + 3], o), c, xd, xm, xs, m + 3, b)
    store_lanes(out, m, r, a0)
    store_lanes(out, m + 1, r, a1)
    store_lanes(out, m + 2, r, a2)
    store_lanes(out, m + 3, r, a3)


@njit(inline="always", cache=True)
def _one_row(fmt, flat, units, row_bytes, raw, xq, xd, xm, xs, out, r, m):
    group, dot, c, step, per = fmt
    a = fzero()
    for b in range(units):
        _prefetch_next(flat, r, b, units, row_bytes)
        w = group(raw, r, b)
        a = step(a, w, dot(w, xq[m], b * per), c, xd, xm, xs, m, b)
    store_lanes(out, m, r, a)


@njit(inline="always", cache=True)
def lanes_item(fmt, raw, xq, xd, xm, xs, out, n_rtiles, item):
    """Work item `item` of a row-lane matmul. fmt = (group, dot, c, step, per): group(raw, r, b)
    gives unit b (per elements: a 32-block, or a Q4_K part of 64) of rows r .. r+15 (a
    tuple: the code vectors, then the per-row numbers the float step needs), dot(that
    tuple, x, off) the 16 integer dots with x[off : off+per], c the codes' offset, step
    the float step (scale_step, scale_min_step, k4_step).

    Call it from a plain @njit function per format, itself called from the prange loop
    (gemm_tiles.tile_item says why)."""
    M = xq.shape[0]
    mc, rt = item // n_rtiles, item % n_rtiles
    r0, r1 = group_range(raw.shape[0], n_rtiles, rt)
    m0, m1 = mc * M_CHUNK, min(M, (mc + 1) * M_CHUNK)
    per = fmt[4]
    units = xq.shape[1] // per  # units (blocks, or Q4_K's 64-element parts) per row
    row_bytes = raw.shape[1]
    flat = raw.reshape(raw.shape[0] * raw.shape[1])  # the prefetch's view of the rows
    if m1 - m0 >= SCRATCH_ROWS:
        acc = np.empty((m1 - m0) * GROUP, np.float32)  # (rows, 16) accumulators
        for r in range(r0, r1, GROUP):
            _chunk_rows(fmt, flat, units, row_bytes, raw, xq, xd, xm, xs, out, acc, r, m0, m1)
    else:
        m4 = m0 + (m1 - m0) // 4 * 4
        for r in range(r0, r1, GROUP):
            for m in range(m0, m4, 4):
                _four_rows(fmt, flat, units, row_bytes, raw, xq, xd, xm, xs, out, r, m)
            for m in range(m4, m1):
                _one_row(fmt, flat, units, row_bytes, raw, xq, xd, xm, xs, out, r, m)
