"""Causal attention over the KV cache, rounded the way llama.cpp rounds it.

Work items are (query row t, KV head g). Every query head that shares KV head g
is handled by the same item, so each cached key and value is read once per
group (GQA/MQA). An item keeps only its own scores, (heads per group, keys it
sees): the T x T score matrix of a prompt is never built.

llama.cpp's reference logits come from its non-flash path: with an f16 cache
the queries are rounded to f16 for the K dot, the softmax (summed in double)
gives probabilities that are rounded to f16 before they meet V. A one-pass
online-softmax (flash) update cannot round there, and on these models the
difference moved last-row distributions by KL up to 0.03-0.06 (measured),
against ~0.005 with this arithmetic. With an f32 cache nothing is rounded.

A row's arithmetic is the same whatever else shares the call: every row uses
the 8-lane dot order of llama.cpp's batched path (a prompt row and a decode row
alike), so a token's attention output never depends on the batch it came in.
Decode has one query row and often a single KV head, so `attention_split`
spreads the work over threads in phases (scores and exponentials by key
chunk, weighted values by column chunk) that repeat attention_rows' arithmetic
element by element: its output is bit-identical, not just close.

Sliding-window layers only visit keys j with pos - j < window.

The cache is paged (kv_cache.KVPool): a row's key j lives in block table[j >> sh]
at offset j & (bs - 1) of its sequence's block table. Only addresses depend on
the table; the arithmetic follows the absolute key index j, so a sequence gives
the same bits in whatever blocks its keys sit.
"""

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401
from .convert import as_f32, round_like
from .fmath import expf8, expf_ggml_call, fma32, hsum8
from .vec8 import bcast8, fma8, hsum_movehl, load8, store8, sub8, zero8
from .vec16 import HAS_ZMM, bcast16, fma16, hsum_halves, load16, load8x2, store16, zero16


@njit(inline="always", cache=True)
def _key_range(p, window):
    return (max(0, p - window + 1) if window > 0 else 0), p + 1


@njit(inline="always", cache=True)
def _block_shift(pool):
    """log2 of the pool's block size (a power of two): key j is in table entry j >> shift."""
    bs, sh = pool.shape[2], 0
    while (1 << sh) < bs:
        sh += 1
    return sh


@njit(inline="always", cache=True)
def _cell(pool, table, sh, g, j):
    """Key (or value) j of KV head g: a (d,) row of the layer's pool (n_blocks, G, bs, d)."""
    return pool[table[j >> sh], g, j & ((1 << sh) - 1)]


@njit(inline="always", cache=True)
def _dot_batch(k, q):
    """k . q in llama.cpp's tiled f16 matmul order: 8 lanes (element i in lane i % 8) of
    fused multiply-adds, summed by halves then movehl. k: (d,) cache row; q: (d,) float32."""
    d = q.shape[0]
    if d % 8 == 0:
        acc = zero8()
        for i in range(0, d, 8):
            acc = fma8(load8(k, i), load8(q, i), acc)
        return hsum_movehl(acc)
    lanes = np.zeros(8, np.float32)
    for i in range(d):
        lanes[i & 7] = fma32(as_f32(k[i]), q[i], lanes[i & 7])
    return hsum8(lanes)


@njit(inline="always", cache=True)
def _dot_batch4(k, q0, q1, q2, q3):
    """_dot_batch of one cache row with four query rows, the row loaded once per 8 elements
    (each dot keeps its own lanes and order). d % 8 == 0."""
    a0, a1, a2, a3 = zero8(), zero8(), zero8(), zero8()
    for i in range(0, q0.shape[0], 8):
        kv = load8(k, i)
        a0 = fma8(kv, load8(q0, i), a0)
        a1 = fma8(kv, load8(q1, i), a1)
        a2 = fma8(kv, load8(q2, i), a2)
        a3 = fma8(kv, load8(q3, i), a3)
    return hsum_movehl(a0), hsum_movehl(a1), hsum_movehl(a2), hsum_movehl(a3)


@njit(inline="always", cache=True)
def _capped(acc, softcap):
    return softcap * np.tanh(acc / softcap) if softcap > 0 else acc


@njit(inline="always", cache=True)
def _paired(qh):
    """(heads, 2 dk) copy of qh (heads, dk) with each 8 elements twice: a 16-lane load at
    2 i gives q[i:i+8] in both halves, against two key rows side by side (load8x2)."""
    hpg, dk = qh.shape
    qq = np.empty((hpg, 2 * dk), np.float32)
    for hh in range(hpg):
        for i in range(0, dk, 8):
            for x in range(8):
                qq[hh, 2 * i + x] = qh[hh, i + x]
                qq[hh, 2 * i + 8 + x] = qh[hh, i + x]
    return qq


@njit(inline="always", cache=True)
def _scores4x4(k0, k1, k2, k3, qq, hh, s, c, softcap):
    """s[hh..hh+3, c..c+3] for keys rows k0..k3 and heads hh..hh+3 (qq: _paired), eight
    16-lane chains of two keys each: every (key, head) dot is _dot_batch's, bit for bit."""
    a0, a1, a2, a3 = zero16(), zero16(), zero16(), zero16()
    b0, b1, b2, b3 = zero16(), zero16(), zero16(), zero16()
    q0, q1, q2, q3 = qq[hh], qq[hh + 1], qq[hh + 2], qq[hh + 3]
    for i in range(0, k0.shape[0], 8):
        ka, kb = load8x2(k0, i, k1, i), load8x2(k2, i, k3, i)
        x0, x1, x2, x3 = load16(q0, 2 * i), load16(q1, 2 * i), load16(q2, 2 * i), load16(q3, 2 * i)
        a0, b0 = fma16(ka, x0, a0), fma16(kb, x0, b0)
        a1, b1 = fma16(ka, x1, a1), fma16(kb, x1, b1)
        a2, b2 = fma16(ka, x2, a2), fma16(kb, x2, b2)
        a3, b3 = fma16(ka, x3, a3), fma16(kb, x3, b3)
    _store_pairs(s, hh, c, a0, b0, softcap)
    _store_pairs(s, hh + 1, c, a1, b1, softcap)
    _store_pairs(s, hh + 2, c, a2, b2, softcap)
    _store_pairs(s, hh + 3, c, a3, b3, softcap)


@njit(inline="always", cache=True)
def _scores8x1(k0, k1, k2, k3, k4, k5, k6, k7, qh2, hh, s, c, softcap):
    """s[hh, c..c+7] for key rows k0..k7 and one head (qh2: its _paired row): four chains."""
    a, b, e, f = zero16(), zero16(), zero16(), zero16()
    for i in range(0, k0.shape[0], 8):
        x = load16(qh2, 2 * i)
        a = fma16(load8x2(k0, i, k1, i), x, a)
        b = fma16(load8x2(k2, i, k3, i), x, b)
        e = fma16(load8x2(k4, i, k5, i), x, e)
        f = fma16(load8x2(k6, i, k7, i), x, f)
    _store_pairs(s, hh, c, a, b, softcap)
    _store_pairs(s, hh, c + 4, e, f, softcap)


@njit(inline="always", cache=True)
def _store_pairs(s, hh, c, a, b, softcap):
    """s[hh, c..c+3] from two chains of two keys each."""
    d0, d1 = hsum_halves(a)
    d2, d3 = hsum_halves(b)
    s[hh, c], s[hh, c + 1] = _capped(d0, softcap), _capped(d1, softcap)
    s[hh, c + 2], s[hh, c + 3] = _capped(d2, softcap), _capped(d3, softcap)


@njit(cache=True)  # a call, not inlined: compiled once for both of its callers
def _scores(q, t, g, kc, table, sh, j0, j1, softcap, s, col0):
    """s[hh, col0 + j - j0] = q[t, g*hpg + hh] . k[g, j] for keys j0..j1-1 (q rounded like K)."""
    hpg, dk = s.shape[0], q.shape[2]
    qh = np.empty((hpg, dk), np.float32)
    for hh in range(hpg):
        for i in range(dk):
            qh[hh, i] = round_like(q[t, g * hpg + hh, i], kc[0, 0, 0, 0])
    j = j0
    if HAS_ZMM and dk % 8 == 0:
        # Keys in fours (four heads) or eights (one head): enough independent chains to
        # keep both FMA ports busy; the plain loops below finish the keys left over.
        qq = _paired(qh)
        if hpg % 4 == 0:
            while j + 4 <= j1:
                k0, k1 = _cell(kc, table, sh, g, j), _cell(kc, table, sh, g, j + 1)
                k2, k3 = _cell(kc, table, sh, g, j + 2), _cell(kc, table, sh, g, j + 3)
                for hh in range(0, hpg, 4):
                    _scores4x4(k0, k1, k2, k3, qq, hh, s, col0 + j - j0, softcap)
                j += 4
        else:
            while j + 8 <= j1:
                k0, k1 = _cell(kc, table, sh, g, j), _cell(kc, table, sh, g, j + 1)
                k2, k3 = _cell(kc, table, sh, g, j + 2), _cell(kc, table, sh, g, j + 3)
                k4, k5 = _cell(kc, table, sh, g, j + 4), _cell(kc, table, sh, g, j + 5)
                k6, k7 = _cell(kc, table, sh, g, j + 6), _cell(kc, table, sh, g, j + 7)
                for hh in range(hpg):
                    _scores8x1(k0, k1, k2, k3, k4, k5, k6, k7, qq[hh], hh, s, col0 + j - j0, softcap)
                j += 8
    if dk % 8 == 0 and hpg % 4 == 0:  # heads four at a time, sharing each key row's loads
        for j in range(j, j1):
            krow = _cell(kc, table, sh, g, j)
            c = col0 + j - j0
            for hh in range(0, hpg, 4):
                d0, d1, d2, d3 = _dot_batch4(krow, qh[hh], qh[hh + 1], qh[hh + 2], qh[hh + 3])
                s[hh, c], s[hh + 1, c] = _capped(d0, softcap), _capped(d1, softcap)
                s[hh + 2, c], s[hh + 3, c] = _capped(d2, softcap), _capped(d3, softcap)
        return
    # other group sizes one head at a time (a remainder loop after the four-head one ran
    # SmolLM2's 3 heads per group 45% slower than this plain loop: measured)
    for j in range(j, j1):
        krow = _cell(kc, table, sh, g, j)
        for hh in range(hpg):
            s[hh, col0 + j - j0] = _capped(_dot_batch(krow, qh[hh]), softcap)


@njit(cache=True)  # a call, not inlined: compiled once for its two call sites
def _values_keys(p, vc, table, sh, g, h0, h1, j0, j1, k0, k1, col0, lanes, i0, i1):
    """_weighted_values' terms for keys k0..k1-1 (within j0..j1), one key at a time, the
    lanes read from and written back to memory."""
    dv = lanes.shape[2]
    for j in range(k0, k1):
        vrow = _cell(vc, table, sh, g, j)
        for hh in range(h0, h1):
            acc = lanes[hh - h0, j & 7]
            w = p[hh, col0 + j - j0]
            if dv % 8 == 0:
                wv = bcast8(w)
                for i in range(i0, i1, 8):
                    store8(acc, i, fma8(load8(vrow, i), wv, load8(acc, i)))
            else:
                for i in range(i0, i1):
                    acc[i] = fma32(as_f32(vrow[i]), w, acc[i])


@njit(inline="always", cache=True)
def _value_cols8(ln, pr, flat, starts, n8, dv, i):
    """Columns i..i+7 of _weighted_values' register loop: the 8 lanes (ln (8, dv)) in
    registers over the pass's n8 groups of 8 keys (flat offsets `starts`, weights pr)."""
    c0, c1, c2, c3 = load8(ln[0], i), load8(ln[1], i), load8(ln[2], i), load8(ln[3], i)
    c4, c5, c6, c7 = load8(ln[4], i), load8(ln[5], i), load8(ln[6], i), load8(ln[7], i)
    for q in range(n8):
        o = starts[q] + i
        p8 = pr[8 * q:]  # constant indices below: no negative-index checks
        c0 = fma8(load8(flat, o), bcast8(p8[0]), c0)
        c1 = fma8(load8(flat, o + dv), bcast8(p8[1]), c1)
        c2 = fma8(load8(flat, o + 2 * dv), bcast8(p8[2]), c2)
        c3 = fma8(load8(flat, o + 3 * dv), bcast8(p8[3]), c3)
        c4 = fma8(load8(flat, o + 4 * dv), bcast8(p8[4]), c4)
        c5 = fma8(load8(flat, o + 5 * dv), bcast8(p8[5]), c5)
        c6 = fma8(load8(flat, o + 6 * dv), bcast8(p8[6]), c6)
        c7 = fma8(load8(flat, o + 7 * dv), bcast8(p8[7]), c7)
    store8(ln[0], i, c0)
    store8(ln[1], i, c1)
    store8(ln[2], i, c2)
    store8(ln[3], i, c3)
    store8(ln[4], i, c4)
    store8(ln[5], i, c5)
    store8(ln[6], i, c6)
    store8(ln[7], i, c7)


@njit(inline="always", cache=True)
def _value_cols16(ln, pr, flat, starts, n8, dv, i):
    """_value_cols8 for columns i..i+15 in one 16-lane register per lane: every column
    keeps its own chain, so the bits are the same."""
    c0, c1, c2, c3 = load16(ln[0], i), load16(ln[1], i), load16(ln[2], i), load16(ln[3], i)
    c4, c5, c6, c7 = load16(ln[4], i), load16(ln[5], i), load16(ln[6], i), load16(ln[7], i)
    for q in range(n8):
        o = starts[q] + i
        p8 = pr[8 * q:]
        c0 = fma16(load16(flat, o), bcast16(p8[0]), c0)
        c1 = fma16(load16(flat, o + dv), bcast16(p8[1]), c1)
        c2 = fma16(load16(flat, o + 2 * dv), bcast16(p8[2]), c2)
        c3 = fma16(load16(flat, o + 3 * dv), bcast16(p8[3]), c3)
        c4 = fma16(load16(flat, o + 4 * dv), bcast16(p8[4]), c4)
        c5 = fma16(load16(flat, o + 5 * dv), bcast16(p8[5]), c5)
        c6 = fma16(load16(flat, o + 6 * dv), bcast16(p8[6]), c6)
        c7 = fma16(load16(flat, o + 7 * dv), bcast16(p8[7]), c7)
    store16(ln[0], i, c0)
    store16(ln[1], i, c1)
    store16(ln[2], i, c2)
    store16(ln[3], i, c3)
    store16(ln[4], i, c4)
    store16(ln[5], i, c5)
    store16(ln[6], i, c6)
    store16(ln[7], i, c7)


# Keys per pass of _weighted_values' register loop: their value rows (32 x dv f16) stay in
# L1 while every 8-column chunk of every head passes over them.
VALUE_KEYS = 32


@njit(cache=True)  # a call, not inlined: compiled once for both of its callers
def _weighted_values(p, vc, table, sh, g, h0, h1, j0, j1, col0, lanes, i0, i1):
    """lanes[hh - h0, lane(j), i] += p[hh, col0 + j - j0] * v[g, j, i] (fused) for heads
    h0..h1-1 of the group, keys j0..j1-1 and columns i0..i1-1 (multiples of 8 when dv is).

    Lanes are keyed by the absolute key index, lane j % 8, as in llama.cpp's dot of a V
    row (over all cache cells, masked ones weighted 0) with the probabilities. Each
    (head, lane, column) is its own chain over the keys in order, so splitting heads or
    columns over threads changes nothing, and neither does the loop order: whole 8-key
    groups keep an 8-column chunk's eight lanes in registers over VALUE_KEYS keys, the
    keys before and after them go one at a time (_values_keys).
    """
    dv, bs = lanes.shape[2], vc.shape[2]
    a = min(j1, (j0 + 7) // 8 * 8)  # whole 8-key groups: keys a..b-1
    b = max(a, j1 // 8 * 8)
    if dv % 8 != 0 or bs % 8 != 0:
        a = b = j1
    _values_keys(p, vc, table, sh, g, h0, h1, j0, j1, j0, a, col0, lanes, i0, i1)
    flat = vc.reshape(vc.size)  # the layer's values as one row, addressed below by offset
    G = vc.shape[1]
    starts = np.empty(VALUE_KEYS // 8, np.int64)  # flat offset of each 8-key group's first row
    for k0 in range(a, b, VALUE_KEYS):
        n8 = (min(b, k0 + VALUE_KEYS) - k0) // 8
        for q in range(n8):
            j = k0 + 8 * q  # keys j..j+7 lie in one block of the pool (bs % 8 == 0)
            starts[q] = ((np.int64(table[j >> sh]) * G + g) * bs + (j & (bs - 1))) * dv
        for hh in range(h0, h1):
            ln = lanes[hh - h0]
            pr = p[hh, col0 + k0 - j0:]  # (>= 8 * n8,) the pass's probabilities
            i = i0
            if HAS_ZMM:
                while i + 16 <= i1:
                    _value_cols16(ln, pr, flat, starts, n8, dv, i)
                    i += 16
            while i < i1:
                _value_cols8(ln, pr, flat, starts, n8, dv, i)
                i += 8
    _values_keys(p, vc, table, sh, g, h0, h1, j0, j1, b, j1, col0, lanes, i0, i1)


@njit(inline="always", cache=True)
def _reduce_lanes(lanes, out, i0, i1):
    """out[i] = the 8 lanes' sum for i in i0..i1-1, in llama.cpp's order. lanes: (8, d)."""
    for i in range(i0, i1):
        s0 = lanes[0, i] + lanes[4, i]
        s1 = lanes[1, i] + lanes[5, i]
        s2 = lanes[2, i] + lanes[6, i]
        s3 = lanes[3, i] + lanes[7, i]
        out[i] = (s0 + s2) + (s1 + s3)


@njit(inline="always", cache=True)
def _exp_cell(s, hh, m, j0, j1, col0, j):
    """exp(s - m) written back for key j if j0 <= j < j1; 0 for a masked cell."""
    if j0 <= j < j1:
        e = expf_ggml_call(s[hh, col0 + j - j0] - m)
        s[hh, col0 + j - j0] = e
        return e
    return np.float32(0.0)


@njit(inline="always", cache=True)
def _exp_block_sum(s, hh, m, j0, j1, col0, blk):
    """Replace s[hh, col0 + j - j0] by exp(s - m) for the keys of the 8-key block starting at
    absolute index blk (clipped to j0..j1-1); return the block's f32 sum in AVX lane order.

    llama.cpp exponentiates 8 cache cells at a time from cell 0 and adds each block's
    f32 sum to a double; masked cells contribute exact zeros.
    """
    if blk >= j0 and blk + 8 <= j1:  # a whole block: 8 lanes at once, same roundings
        c = col0 + blk - j0
        row = s[hh]
        e = expf8(sub8(load8(row, c), bcast8(m)))
        store8(row, c, e)
        return hsum_movehl(e)
    # lane x holds key blk + x; kept in scalars (no array per call: this runs once per
    # 8 keys per head), summed as hsum8 does: (x, x + 4) pairs, then (0+2) + (1+3)
    e0 = _exp_cell(s, hh, m, j0, j1, col0, blk)
    e1 = _exp_cell(s, hh, m, j0, j1, col0, blk + 1)
    e2 = _exp_cell(s, hh, m, j0, j1, col0, blk + 2)
    e3 = _exp_cell(s, hh, m, j0, j1, col0, blk + 3)
    e4 = _exp_cell(s, hh, m, j0, j1, col0, blk + 4)
    e5 = _exp_cell(s, hh, m, j0, j1, col0, blk + 5)
    e6 = _exp_cell(s, hh, m, j0, j1, col0, blk + 6)
    e7 = _exp_cell(s, hh, m, j0, j1, col0, blk + 7)
    return ((e0 + e4) + (e2 + e6)) + ((e1 + e5) + (e3 + e7))


@njit(inline="always", cache=True)
def _balanced_row(r, T):
    """Row order 0, T-1, 1, T-2, ...: prange hands each thread one contiguous run of
    items, and under the causal mask late rows see many more keys than early ones. In
    plain row order the second of 2 threads got 3/4 of a prompt's work; paired, each
    thread gets about half (measured: 0.33 -> 0.22 s for SmolLM2's 30 layers at T=512)."""
    return r // 2 if r % 2 == 0 else T - 1 - r // 2


# Each parallel loop's body is one plain call: numba's parfor passes work on the loop's
# whole inlined body, and with the bodies inline these two kernels took 42 s of a 106 s
# cold start (measured with numba's compile events). The arithmetic is the same code.


@njit(cache=True)
def _row_item(q, kc, vc, positions, seq, tables, window, softcap, out, sh, t, g):
    """Query row t against KV head g: every head of the group, into out[t]."""
    hpg, dv = q.shape[1] // kc.shape[1], vc.shape[3]
    table = tables[seq[t]]
    j0, j1 = _key_range(positions[t], window)
    n = j1 - j0
    s = np.empty((hpg, n), np.float32)  # (heads in group, keys) this row's scores
    zero = np.int64(0)  # not a literal 0: _scores and _weighted_values compile once for both callers
    _scores(q, t, g, kc, table, sh, j0, j1, softcap, s, zero)
    for hh in range(hpg):
        m = s[hh, 0]
        for j in range(1, n):
            m = max(m, s[hh, j])
        total = 0.0  # double, as llama.cpp sums its softmax
        for blk in range(j0 - j0 % 8, j1, 8):
            total += np.float64(_exp_block_sum(s, hh, m, j0, j1, 0, blk))
        inv = np.float32(1.0 / total)
        for j in range(n):
            s[hh, j] = round_like(s[hh, j] * inv, vc[0, 0, 0, 0])
    lanes = np.zeros((hpg, 8, dv), np.float32)  # (heads, lanes, dv)
    _weighted_values(s, vc, table, sh, g, zero, hpg, j0, j1, zero, lanes, zero, dv)
    for hh in range(hpg):
        _reduce_lanes(lanes[hh], out[t, g * hpg + hh], 0, dv)


@njit(cache=True, parallel=True)
def attention_rows(q, kc, vc, positions, seq, tables, window, softcap, out):
    """One item per (row, KV head). q (T, H, dk) rotated and scaled; kc (NB, G, bs, dk),
    vc (NB, G, bs, dv): one layer of the pool, filled up to each row's position;
    positions (T,) int32; seq (T,) int32: row t uses block table tables[seq[t]];
    tables (S, max_blocks) int32; out (T, H, dv)."""
    T, G = q.shape[0], kc.shape[1]
    sh = _block_shift(kc)
    for item in prange(T * G):
        it = np.int64(item)  # prange's index is unsigned in the parfor: int64 gives the callee one compile
        _row_item(q, kc, vc, positions, seq, tables, window, softcap, out, sh, _balanced_row(it // G, T), it % G)


# Columns of one head's output per work item in attention_split's value phase.
SPLIT_COLS = 32


@njit(inline="always", cache=True)
def _chunk_keys(lo, hi, base, per, c):
    """Keys of chunk c of a split row: [j0, j1), on 8-key block boundaries from base."""
    return max(lo, min(hi, base + c * per)), min(hi, base + (c + 1) * per)


@njit(cache=True)
def _split_scores(q, kc, table, sh, softcap, s, lo, hi, base, per, n_split, item):
    g, c = item // n_split, item % n_split
    j0, j1 = _chunk_keys(lo, hi, base, per, c)
    if j0 < j1:
        _scores(q, np.int64(0), g, kc, table, sh, j0, j1, softcap, s[g], j0 - lo)  # as _row_item's types


@njit(cache=True)
def _split_exps(s, mx, bsum, lo, hi, base, per, n_split, item):
    g, c = item // n_split, item % n_split
    j0, j1 = _chunk_keys(lo, hi, base, per, c)
    for hh in range(s.shape[1]):
        for blk in range(base + c * per, j1, 8):
            bsum[g, hh, (blk - base) // 8] = _exp_block_sum(s[g], hh, mx[g, hh], j0, j1, j0 - lo, blk)


@njit(cache=True)
def _split_probs(s, inv, vc, lo, hi, base, per, n_split, item):
    g, c = item // n_split, item % n_split
    j0, j1 = _chunk_keys(lo, hi, base, per, c)
    for hh in range(s.shape[1]):
        for j in range(j0 - lo, j1 - lo):
            s[g, hh, j] = round_like(s[g, hh, j] * inv[g, hh], vc[0, 0, 0, 0])


@njit(cache=True)
def _split_values(s, vc, table, sh, lo, hi, n_cc, out, item):
    hpg, dv = s.shape[1], vc.shape[3]
    g, hh, cc = item // (hpg * n_cc), (item // n_cc) % hpg, item % n_cc
    i0, i1 = (cc * SPLIT_COLS, min(dv, (cc + 1) * SPLIT_COLS)) if n_cc > 1 else (0, dv)
    lanes = np.zeros((1, 8, dv), np.float32)  # (1, lanes, dv), columns i0..i1-1 used
    _weighted_values(s[g], vc, table, sh, g, hh, hh + 1, lo, hi, np.int64(0), lanes, i0, i1)
    _reduce_lanes(lanes[0], out[0, g * hpg + hh], i0, i1)


@njit(cache=True, parallel=True)
def attention_split(q, kc, vc, table, position, window, softcap, n_split, out):
    """attention_rows for one query row (q (1, H, dk), block table `table`), spread over
    threads; same bits.

    Scores and exponentials are per key, so their chunks (n_split per KV head, on
    8-key block boundaries) change nothing; the block sums are kept and added into
    the double total in block order, as attention_rows adds them. The weighted values
    are split by output column instead of by key, so each column keeps its chain.
    """
    _, H, _ = q.shape
    G = kc.shape[1]
    hpg = H // G
    dv = vc.shape[3]
    sh = _block_shift(kc)
    lo, hi = _key_range(position, window)
    n = hi - lo
    base = lo - lo % 8  # chunks start on 8-key blocks, so block sums match attention_rows
    n_blk = (hi - base + 7) // 8
    per = (n_blk + n_split - 1) // n_split * 8  # keys per chunk, a multiple of 8
    s = np.empty((G, hpg, n), np.float32)  # (KV heads, heads in group, keys) scores, then probabilities
    # item goes in as int64: prange's index is unsigned in the parfor, one compile of each callee
    for item in prange(G * n_split):  # scores
        _split_scores(q, kc, table, sh, softcap, s, lo, hi, base, per, n_split, np.int64(item))
    mx = np.empty((G, hpg), np.float32)
    for g in range(G):
        for hh in range(hpg):
            m = s[g, hh, 0]
            for j in range(1, n):
                m = max(m, s[g, hh, j])
            mx[g, hh] = m
    bsum = np.zeros((G, hpg, n_blk), np.float32)  # each 8-key block's f32 sum of exponentials
    for item in prange(G * n_split):
        _split_exps(s, mx, bsum, lo, hi, base, per, n_split, np.int64(item))
    inv = np.empty((G, hpg), np.float32)
    for g in range(G):
        for hh in range(hpg):
            total = 0.0  # double, block by block in order, as attention_rows sums
            for b in range(n_blk):
                total += np.float64(bsum[g, hh, b])
            inv[g, hh] = np.float32(1.0 / total)
    for item in prange(G * n_split):  # probabilities
        _split_probs(s, inv, vc, lo, hi, base, per, n_split, np.int64(item))
    n_cc = (dv + SPLIT_COLS - 1) // SPLIT_COLS if dv % 8 == 0 else 1
    for item in prange(G * hpg * n_cc):  # weighted values, by column chunk
        _split_values(s, vc, table, sh, lo, hi, n_cc, out, np.int64(item))


def attention(q, kc, vc, positions, seq, tables, window=0, n_split=1, softcap=0.0, out=None):
    """Causal attention of q (T, H, dk) against one layer of a paged pool; returns (T, H, dv)
    float32. n_split > 1 splits a single row's keys across threads (decode, long context)."""
    T, H, _ = q.shape
    if out is None:
        out = np.empty((T, H, vc.shape[3]), np.float32)
    if n_split > 1 and T == 1:
        attention_split(q, kc, vc, tables[seq[0]], np.int64(positions[0]), np.int64(window), np.float32(softcap),
                        np.int64(n_split), out)
    else:
        attention_rows(q, kc, vc, positions, seq, tables, np.int64(window), np.float32(softcap), out)
    return out
