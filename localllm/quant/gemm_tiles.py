"""The tiled integer matmul driver shared by every block format and SIMD path.

out[m, r] = dot(dequant(raw[r]), x[m]) for M activation rows (quantized by
q8act) and N weight rows. Work items are (row tile, chunk of M rows); inside an
item, weight rows go in pairs and activation rows in fours, so one pass over a
weight block serves 4 activation rows and one activation block serves 2 weight
rows. The format's init/step/fin functions (blocks_avx2, blocks_avx512) do the
arithmetic of one (row pair, activation row); LLVM keeps the 4 states in
registers and shares the loads and decodes between them. On the avx512 path,
tile_wide first runs each item's activation rows in groups of 16 through the
format's wide functions (blocks_avx512), which share one weight decode among
all 16.

An element's arithmetic never depends on the tiling: its state is its own, and
its units are visited in order. So M = 1 (decode), M = 5 (speculative
verification) and M = 512 (a prompt chunk) give the same bits for the same row.
"""

import localllm._numba_setup  # noqa: F401

from numba import njit

from localllm.quant.simd_x86 import prefetch

# Software prefetch distance of the row-pair loops (decode and small batches, where the
# weights stream from memory). Each unit (block) asks for the line PF_BYTES past its own
# bytes in both rows, so the requests are spread over the loop. On a 2-core Xeon
# (TinyLlama Q4_0, every matrix once from DRAM, one thread) that read 12.3-12.7 GB/s
# against 10.0-10.1 GB/s for the former burst of a whole row's lines 2 KiB ahead at
# the start of each row pair; 1-3 KiB ahead per unit was slower, 4-8 KiB the same.
# The one-row loop asks in every pass (a branch on the first pass cost more than the
# repeated requests); the four-row loop only in items of fewer than STREAM_ROWS rows:
# in prompt chunks its weights come from cache, and asking there made the AVX2 path's
# prompts 5-8% slower.
PF_BYTES = 4096
STREAM_ROWS = 16
# Activation rows per work item: 64 rows of a 2048-wide input are 128 KB of codes,
# which stay in L2 while the item's weight rows pass.
M_CHUNK = 64


@njit(inline="always", cache=True)
def _prefetch_unit(ra, rb, u, ub):
    """Ask for the lines PF_BYTES past unit u's bytes (ub per unit) in rows ra and rb; past
    a row's end that is the rows after it. Units under 64 bytes ask once each."""
    o = u * ub + PF_BYTES
    prefetch(ra, o)
    prefetch(rb, o)
    for e in range(64, ub, 64):  # the rest of a unit over 64 bytes (the K-quants)
        prefetch(ra, o + e)
        prefetch(rb, o + e)


@njit(inline="always", cache=True)
def row_range(n_rows, n_tiles, t):
    size = (n_rows + n_tiles - 1) // n_tiles
    size += size & 1  # even tiles: row pairs never straddle two tiles
    return min(n_rows, t * size), min(n_rows, (t + 1) * size)


@njit(inline="always", cache=True)
def n_items(M, n_rtiles):
    return n_rtiles * ((M + M_CHUNK - 1) // M_CHUNK)


@njit(inline="always", cache=True)
def four_inits(init):
    """The generic four-row state: one format state per activation row."""
    return init(), init(), init(), init()


@njit(inline="always", cache=True)
def four_steps(step, st4, ra, rb, u, a0, a1, a2, a3):
    """Unit u for four activation rows, a_j = (codes, scales, scale * sums, sums) of row j:
    the format's step once per row (LLVM shares the weight loads between the inlined copies).
    A format can bring its own four-row state and step instead (the Q4_K ones)."""
    return (step(st4[0], ra, rb, u, a0[0], a0[1], a0[2], a0[3]), step(st4[1], ra, rb, u, a1[0], a1[1], a1[2], a1[3]),
            step(st4[2], ra, rb, u, a2[0], a2[1], a2[2], a2[3]), step(st4[3], ra, rb, u, a3[0], a3[1], a3[2], a3[3]))


@njit(inline="always", cache=True)
def four_fins(fin, st4):
    """((row a, row b) outputs) of each of the four activation rows."""
    return fin(st4[0]), fin(st4[1]), fin(st4[2]), fin(st4[3])


@njit(inline="always", cache=True)
def _item_bounds(N, M, n_rtiles, item):
    mc, rt = item // n_rtiles, item % n_rtiles
    r0, r1 = row_range(N, n_rtiles, rt)
    return r0, r1, mc * M_CHUNK, min(M, (mc + 1) * M_CHUNK)


@njit(inline="always", cache=True)
def _row_pairs(init, step, fin, init4, step4, fin4, raw, xq, xd, xm, xs, out, units, r0, r1, m0, m1):
    """Elements [m0, m1) x [r0, r1): weight rows in pairs, activation rows in fours, then ones."""
    m4 = m0 + (m1 - m0) // 4 * 4
    ub = raw.shape[1] // units  # bytes per unit
    stream = m1 - m0 < STREAM_ROWS  # few activation rows: the weights come from memory
    for r in range(r0, r1, 2):
        r2 = min(r + 1, r1 - 1)  # an odd last row is computed twice and stored once
        ra, rb = raw[r], raw[r2]
        for m in range(m0, m4, 4):
            a0 = (xq[m], xd[m], xm[m], xs[m])
            a1 = (xq[m + 1], xd[m + 1], xm[m + 1], xs[m + 1])
            a2 = (xq[m + 2], xd[m + 2], xm[m + 2], xs[m + 2])
            a3 = (xq[m + 3], xd[m + 3], xm[m + 3], xs[m + 3])
            st4 = init4(init)
            for u in range(units):
                if stream:
                    _prefetch_unit(ra, rb, u, ub)
                st4 = step4(step, st4, ra, rb, u, a0, a1, a2, a3)
            o0, o1, o2, o3 = fin4(fin, st4)
            out[m, r], out[m, r2] = o0
            out[m + 1, r], out[m + 1, r2] = o1
            out[m + 2, r], out[m + 2, r2] = o2
            out[m + 3, r], out[m + 3, r2] = o3
        for m in range(m4, m1):
            x0, s0, sm0, g0 = xq[m], xd[m], xm[m], xs[m]
            st0 = init()
            for u in range(units):
                _prefetch_unit(ra, rb, u, ub)
                st0 = step(st0, ra, rb, u, x0, s0, sm0, g0)
            out[m, r], out[m, r2] = fin(st0)


@njit(inline="always", cache=True)
def tile_item(init, step, fin, init4, step4, fin4, raw, xq, xd, xm, xs, out, units, n_rtiles, item):
    """Compute the elements of work item `item` (see module doc). units: blocks per row.
    init/step/fin serve one activation row, init4/step4/fin4 four (four_inits, four_steps
    and four_fins unless the format has its own).

    Call it from a plain (not parallel) @njit function per format, itself called from
    the prange loop: numba's parfor analysis cannot follow the formats' tuple states,
    and passing the format functions to a non-inlined call would stop numba caching."""
    r0, r1, m0, m1 = _item_bounds(raw.shape[0], xq.shape[0], n_rtiles, item)
    _row_pairs(init, step, fin, init4, step4, fin4, raw, xq, xd, xm, xs, out, units, r0, r1, m0, m1)


@njit(inline="always", cache=True)
def tile_wide(block, n_wide, wide_acts, init_w, step_w, fin_w, init, step, fin, init4, step4, fin4,
              raw, xq, xd, xm, xs, out, units, n_rtiles, item):
    """tile_item with the item's activation rows in groups of n_wide first (prompt chunks;
    blocks_avx512's wide functions): wide_acts copies the grouped rows into a scratch
    once per item, step_w runs one unit for a group (block: the format's decode, which
    step_w calls), fin_w(state, j) finishes a group's row j. The rows left over (all
    of them when M < n_wide: decode allocates nothing) go as in tile_item."""
    r0, r1, m0, m1 = _item_bounds(raw.shape[0], xq.shape[0], n_rtiles, item)
    n = (m1 - m0) // n_wide * n_wide
    if n > 0:
        acts = wide_acts(xq, xd, xm, xs, m0, n)
        for r in range(r0, r1, 2):
            r2 = min(r + 1, r1 - 1)
            ra, rb = raw[r], raw[r2]
            for i0 in range(0, n, n_wide):
                st = init_w()
                for u in range(units):
                    st = step_w(block, st, ra, rb, u, acts, n, i0)
                for j in range(n_wide):
                    out[m0 + i0 + j, r], out[m0 + i0 + j, r2] = fin_w(st, j)
    _row_pairs(init, step, fin, init4, step4, fin4, raw, xq, xd, xm, xs, out, units, r0, r1, m0 + n, m1)


@njit(cache=True)
def row_tiles(n_rows, M, n_threads):
    """Row tiles for a matmul of M activation rows: about 4 work items per thread in all."""
    n_mc = (M + M_CHUNK - 1) // M_CHUNK
    want = (4 * n_threads + n_mc - 1) // n_mc
    return max(1, min((n_rows + 1) // 2, want))
