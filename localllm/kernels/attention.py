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

Decode has one query row and often a single KV head, so `attention_split`
spreads its keys over threads in phases (scores, max, sums, values) that give
the same probabilities as one pass.

Sliding-window layers only visit keys j with pos - j < window.
"""

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401
from .convert import as_f32, round_like
from .fmath import expf_ggml, fma32, hsum8, hsum32


@njit(inline="always", cache=True)
def _key_range(p, window):
    return (max(0, p - window + 1) if window > 0 else 0), p + 1


@njit(inline="always", cache=True)
def _scores(q, t, g, kc, j0, j1, softcap, s, col0, single):
    """s[hh, col0 + j - j0] = q[t, g*hpg + hh] . k[g, j] for keys j0..j1-1 (q rounded like K).

    The dots keep llama.cpp's f16 matmul order: for a batch of rows, 8 lanes (element
    i in lane i % 8) of fused multiply-adds summed as an AVX horizontal add; for a
    single row (decode), its vector dot: 4 x 8 lanes over steps of 32, reduced by hsum32.
    """
    hpg, dk = s.shape[0], q.shape[2]
    qh = np.empty((hpg, dk), np.float32)
    for hh in range(hpg):
        for i in range(dk):
            qh[hh, i] = round_like(q[t, g * hpg + hh, i], kc[0, 0, 0])
    kf = np.empty(dk, np.float32)
    lanes = np.empty(8, np.float32)
    lanes4 = np.empty((4, 8), np.float32)
    for j in range(j0, j1):
        for i in range(dk):
            kf[i] = as_f32(kc[g, j, i])
        for hh in range(hpg):
            if single:
                lanes4[:] = 0.0
                for i in range(dk):
                    lanes4[(i >> 3) & 3, i & 7] = fma32(kf[i], qh[hh, i], lanes4[(i >> 3) & 3, i & 7])
                acc = hsum32(lanes4)
            else:
                lanes[:] = 0.0
                for i in range(dk):
                    lanes[i & 7] = fma32(kf[i], qh[hh, i], lanes[i & 7])
                acc = hsum8(lanes)
            if softcap > 0:
                acc = softcap * np.tanh(acc / softcap)
            s[hh, col0 + j - j0] = acc


@njit(inline="always", cache=True)
def _weighted_values(p, vc, g, j0, j1, col0, lanes):
    """lanes[hh, i, lane(j)] += p[hh, col0 + j - j0] * v[g, j, i] (fused), keys j0..j1-1.

    Lanes are keyed by the absolute key index, as in llama.cpp's dot of a V row
    (over all cache cells, masked ones weighted 0) with the probabilities: lane
    j % 8 with 8 lanes (a batch), or (j // 8) % 4 * 8 + j % 8 with 32 (decode).
    """
    hpg, dv, nl = lanes.shape
    vf = np.empty(dv, np.float32)
    for j in range(j0, j1):
        for i in range(dv):
            vf[i] = as_f32(vc[g, j, i])
        ln = (j & 31) if nl == 32 else (j & 7)
        for hh in range(hpg):
            w = p[hh, col0 + j - j0]
            for i in range(dv):
                lanes[hh, i, ln] = fma32(vf[i], w, lanes[hh, i, ln])


@njit(inline="always", cache=True)
def _reduce_lanes(lanes):
    """One value from 8 (batch) or 32 (decode) lanes, in llama.cpp's order."""
    if lanes.shape[0] == 32:
        return hsum32(lanes.reshape(4, 8))
    return hsum8(lanes)


@njit(inline="always", cache=True)
def _exp_block_sum(s, hh, m, j0, j1, col0, blk):
    """Replace s[hh, col0 + j - j0] by exp(s - m) for the keys of the 8-key block starting at
    absolute index blk (clipped to j0..j1-1); return the block's f32 sum in AVX lane order.

    llama.cpp exponentiates 8 cache cells at a time from cell 0 and adds each block's
    f32 sum to a double; masked cells contribute exact zeros.
    """
    lanes = np.zeros(8, np.float32)
    for x in range(8):
        j = blk + x
        if j0 <= j < j1:
            e = expf_ggml(s[hh, col0 + j - j0] - m)
            s[hh, col0 + j - j0] = e
            lanes[x] = e
    return hsum8(lanes)


@njit(cache=True, parallel=True)
def attention_rows(q, kc, vc, positions, window, softcap, out):
    """One item per (row, KV head). q (T, H, dk) rotated and scaled; kc (G, n_ctx, dk),
    vc (G, n_ctx, dv) filled up to max(positions); positions (T,) int32; out (T, H, dv)."""
    T, H, _ = q.shape
    G = kc.shape[0]
    hpg = H // G
    dv = vc.shape[2]
    for item in prange(T * G):
        t = item // G
        g = item % G
        j0, j1 = _key_range(positions[t], window)
        n = j1 - j0
        s = np.empty((hpg, n), np.float32)  # (heads in group, keys) this row's scores
        _scores(q, t, g, kc, j0, j1, softcap, s, 0, T == 1)
        for hh in range(hpg):
            m = s[hh, 0]
            for j in range(1, n):
                m = max(m, s[hh, j])
            total = 0.0  # double, as llama.cpp sums its softmax
            for blk in range(j0 - j0 % 8, j1, 8):
                total += np.float64(_exp_block_sum(s, hh, m, j0, j1, 0, blk))
            inv = np.float32(1.0 / total)
            for j in range(n):
                s[hh, j] = round_like(s[hh, j] * inv, vc[0, 0, 0])
        lanes = np.zeros((hpg, dv, 32 if T == 1 else 8), np.float32)
        _weighted_values(s, vc, g, j0, j1, 0, lanes)
        for hh in range(hpg):
            for i in range(dv):
                out[t, g * hpg + hh, i] = _reduce_lanes(lanes[hh, i])


@njit(cache=True, parallel=True)
def attention_split(q, kc, vc, position, window, softcap, n_split, out):
    """One query row (q (1, H, dk)) with its keys split into n_split chunks across threads.

    The probabilities equal attention_rows' up to the order of a double-precision sum.
    """
    _, H, _ = q.shape
    G = kc.shape[0]
    hpg = H // G
    dv = vc.shape[2]
    lo, hi = _key_range(position, window)
    n = hi - lo
    base = lo - lo % 8  # chunks start on 8-key blocks, so block sums match attention_rows
    per = ((hi - base + n_split - 1) // n_split + 7) // 8 * 8
    s = np.empty((G, hpg, n), np.float32)  # (KV heads, heads in group, keys) scores, then probabilities
    for item in prange(G * n_split):  # scores
        g, c = item // n_split, item % n_split
        j0, j1 = max(lo, min(hi, base + c * per)), min(hi, base + (c + 1) * per)
        _scores(q, 0, g, kc, j0, j1, softcap, s[g], j0 - lo, True)
    mx = np.empty((G, hpg), np.float32)
    for g in range(G):
        for hh in range(hpg):
            m = s[g, hh, 0]
            for j in range(1, n):
                m = max(m, s[g, hh, j])
            mx[g, hh] = m
    sums = np.zeros((G, n_split, hpg), np.float64)
    for item in prange(G * n_split):  # exponentials and partial sums
        g, c = item // n_split, item % n_split
        j0, j1 = max(lo, min(hi, base + c * per)), min(hi, base + (c + 1) * per)
        for hh in range(hpg):
            total = 0.0
            for blk in range(base + c * per, j1, 8):
                total += np.float64(_exp_block_sum(s[g], hh, mx[g, hh], j0, j1, j0 - lo, blk))
            sums[g, c, hh] = total
    partial = np.zeros((G, n_split, hpg, dv, 32), np.float32)
    for item in prange(G * n_split):  # probabilities and weighted values
        g, c = item // n_split, item % n_split
        j0, j1 = max(lo, min(hi, base + c * per)), min(hi, base + (c + 1) * per)
        for hh in range(hpg):
            inv = np.float32(1.0 / sums[g, :, hh].sum())
            for j in range(j0 - lo, j1 - lo):
                s[g, hh, j] = round_like(s[g, hh, j] * inv, vc[0, 0, 0])
        _weighted_values(s[g], vc, g, j0, j1, j0 - lo, partial[g, c])
    lanes = np.empty(32, np.float32)
    for g in range(G):
        for hh in range(hpg):
            for i in range(dv):
                lanes[:] = partial[g, 0, hh, i]
                for c in range(1, n_split):
                    for x in range(32):
                        lanes[x] += partial[g, c, hh, i, x]
                out[0, g * hpg + hh, i] = _reduce_lanes(lanes)


def attention(q, kc, vc, positions, window=0, n_split=1, softcap=0.0, out=None):
    """Causal attention of q (T, H, dk) against the cache; returns (T, H, dv) float32.

    n_split > 1 splits a single row's keys across threads (decode with a long context).
    """
    T, H, _ = q.shape
    if out is None:
        out = np.empty((T, H, vc.shape[2]), np.float32)
    if n_split > 1 and T == 1:
        attention_split(q, kc, vc, np.int64(positions[0]), np.int64(window), np.float32(softcap),
                        np.int64(n_split), out)
    else:
        attention_rows(q, kc, vc, positions, np.int64(window), np.float32(softcap), out)
    return out
