"""Flash-style causal attention over a KV cache.

Each work item is (query row t, KV head g, key chunk c). It walks its keys in
tiles of TILE, keeps a running max m and normaliser l per query head (online
softmax), and never builds the T x T score matrix. All query heads that share
KV head g are handled together, so each cached key and value is read once per
group (GQA/MQA). Splitting the key range into chunks gives the threads work in
decode, where T = 1 and there may be a single KV head; a small second pass
merges the chunks' partial results.

Sliding-window layers only visit keys j with pos - j < window.
"""

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401
from .convert import as_f32

TILE = 64


@njit(cache=True, parallel=True, fastmath=True)
def attention_partial(q, kc, vc, positions, window, n_split, softcap, acc, mrow, lrow):
    """Partial attention for every (t, g, chunk).

    q: (T, H, dk) float32, already rotated and scaled.
    kc: (G, n_ctx, dk), vc: (G, n_ctx, dv) cache (uint16 f16 bits or float32), filled up to max(positions).
    positions: (T,) int32 absolute position of each query row.
    acc: (T, H, n_split, dv) float32 unnormalised outputs; mrow, lrow: (T, H, n_split) running max / sum.
    """
    T, H, dk = q.shape
    G = kc.shape[0]
    dv = vc.shape[2]
    hpg = H // G
    n_items = T * G * n_split
    for item in prange(n_items):
        t = item // (G * n_split)
        g = (item // n_split) % G
        c = item % n_split
        p = positions[t]
        lo = 0
        if window > 0:
            lo = max(0, p - window + 1)
        n_keys = p + 1 - lo
        per = (n_keys + n_split - 1) // n_split
        j0 = lo + c * per
        j1 = min(p + 1, j0 + per)
        scores = np.empty((hpg, TILE), dtype=np.float32)
        kf = np.empty(dk, dtype=np.float32)
        vf = np.empty(dv, dtype=np.float32)
        m = np.full(hpg, -np.inf, dtype=np.float32)
        l = np.zeros(hpg, dtype=np.float32)
        out = np.zeros((hpg, dv), dtype=np.float32)
        for jt in range(j0, j1, TILE):
            nt = min(TILE, j1 - jt)
            # scores for this tile, every head of the group
            for jj in range(nt):
                for i in range(dk):
                    kf[i] = as_f32(kc[g, jt + jj, i])
                for hh in range(hpg):
                    s = np.float32(0.0)
                    for i in range(dk):
                        s += q[t, g * hpg + hh, i] * kf[i]
                    if softcap > 0:
                        s = softcap * np.tanh(s / softcap)
                    scores[hh, jj] = s
            # online softmax update, once per tile
            for hh in range(hpg):
                mt = m[hh]
                for jj in range(nt):
                    mt = max(mt, scores[hh, jj])
                corr = np.exp(m[hh] - mt) if m[hh] > -np.inf else np.float32(0.0)
                l[hh] *= corr
                for i in range(dv):
                    out[hh, i] *= corr
                for jj in range(nt):
                    e = np.exp(scores[hh, jj] - mt)
                    scores[hh, jj] = e
                    l[hh] += e
                m[hh] = mt
            for jj in range(nt):
                for i in range(dv):
                    vf[i] = as_f32(vc[g, jt + jj, i])
                for hh in range(hpg):
                    e = scores[hh, jj]
                    for i in range(dv):
                        out[hh, i] += e * vf[i]
        for hh in range(hpg):
            h = g * hpg + hh
            mrow[t, h, c] = m[hh]
            lrow[t, h, c] = l[hh]
            for i in range(dv):
                acc[t, h, c, i] = out[hh, i]


@njit(cache=True, fastmath=True)
def merge_partials(acc, mrow, lrow, out):
    """out[t, h, :] = softmax-weighted merge of the chunks' partial results. out: (T, H, dv)."""
    T, H, n_split, dv = acc.shape
    for t in range(T):
        for h in range(H):
            mx = -np.inf
            for c in range(n_split):
                mx = max(mx, mrow[t, h, c])
            total = np.float32(0.0)
            for i in range(dv):
                out[t, h, i] = 0.0
            for c in range(n_split):
                if lrow[t, h, c] == 0.0:
                    continue
                w = np.exp(mrow[t, h, c] - mx)
                total += w * lrow[t, h, c]
                for i in range(dv):
                    out[t, h, i] += w * acc[t, h, c, i]
            inv = np.float32(1.0) / total
            for i in range(dv):
                out[t, h, i] *= inv


def attention(q, kc, vc, positions, window=0, n_split=1, softcap=0.0, out=None):
    """Causal attention of q (T, H, dk) against cached keys/values; returns (T, H, dv) float32."""
    T, H, _ = q.shape
    dv = vc.shape[2]
    acc = np.empty((T, H, n_split, dv), dtype=np.float32)
    mrow = np.empty((T, H, n_split), dtype=np.float32)
    lrow = np.empty((T, H, n_split), dtype=np.float32)
    attention_partial(q, kc, vc, positions, np.int64(window), np.int64(n_split), np.float32(softcap), acc, mrow, lrow)
    if out is None:
        out = np.empty((T, H, dv), dtype=np.float32)
    merge_partials(acc, mrow, lrow, out)
    return out
