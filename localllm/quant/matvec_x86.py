"""AVX2 integer-dot matmul kernels for small M (decode, batched decode, verification).

Every kernel computes out[m, r] = dot(dequant(raw[r]), x[m]) for all M
activation rows, with x pre-quantized by q8act.quantize_activations. The weight row
(a few KB) is read from memory once and stays in L1 while it is dotted with
the M activation rows, so M = 1..16 costs one pass over the weights.

Shared signature (uniform, one specialization each):
    raw (N, row_bytes) uint8 readonly, xq (M, K) int8, xd/xm (M, K/32) f32,
    out (M, N) f32, n_tiles: rows are split into n_tiles equal tiles for prange,
    each output element is written by exactly one iteration.

A block's 32 codes become one I8x32; its dot with the activation's 32 int8
codes becomes 8 int32 lanes (vpmaddubsw + vpmaddwd), which are scaled and
accumulated in 8 float lanes; the lanes are summed once per output element.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange

from localllm.kernels.fmath import fma32
from localllm.quant.f16 import bf16_to_f32, f16_to_f32
from localllm.quant.simd_x86 import (
    dot_ss,
    dot_ss16,
    dot_us,
    dot_us_scaled,
    fma_acc,
    fzero,
    hsum,
    iadd,
    ihsum,
    izero,
    load32,
    load_nibbles,
    load_u16,
    load_u32,
    prefetch,
    q5_high_bits,
    v_and,
    v_or,
    v_shl,
    v_shr,
    v_subc,
)


# Software prefetch distance. Rows are streamed once per token, and without it the
# kernels read from memory at 7-9 GB/s on the 2-core Xeon however light their
# arithmetic; asking for the bytes 2 KiB ahead of the row being computed lifted
# Q4_0 matvecs of TinyLlama's shapes to 13-22 GB/s (1, 2, 8 and 16 KiB measured).
PF_BYTES = 2048


@njit(inline="always", cache=True)
def _prefetch_ahead(row):
    """Prefetch PF_BYTES past each cache line of row (it runs past the row's end into the next)."""
    for o in range(0, row.shape[0], 64):
        prefetch(row, o + PF_BYTES)


@njit(inline="always", cache=True)
def _half(row, o):
    return f16_to_f32(load_u16(row, o))


@njit(inline="always", cache=True)
def _scale_min(row, o, j):
    """Q4_K/Q5_K 6-bit scale and min of sub-block j; the 12 packed bytes start at row[o]."""
    if j < 4:
        return np.int32(row[o + j]) & 63, np.int32(row[o + j + 4]) & 63
    a, b, c = np.int32(row[o + j + 4]), np.int32(row[o + j - 4]), np.int32(row[o + j])
    return (a & 0xF) | ((b >> 6) << 4), (a >> 4) | ((c >> 6) << 4)


@njit(inline="always", cache=True)
def _tile(n_rows, n_tiles, t):
    size = (n_rows + n_tiles - 1) // n_tiles
    return min(n_rows, t * size), min(n_rows, (t + 1) * size)


# Legacy 32-element formats: one helper per format adds block b of a row to an
# 8-lane accumulator. The kernels keep llama.cpp's AVX2 arithmetic exactly: one
# accumulator, a fused multiply-add per block, its lane-sum order, and for
# Q4_1 the min terms summed separately in block order. With the same int8
# activations (q8act) the results are then bit-identical to llama.cpp's, which
# matters because a 1-ulp difference can flip an activation code downstream.
# No fastmath here: it would let LLVM reorder those sums.


@njit(inline="always", cache=True)
def _q4_0(acc, row, b, x, s):
    o = b * 18  # d f16 | 16 B nibbles
    w = v_subc(load_nibbles(row, o + 2), 8)
    return fma_acc(acc, _half(row, o) * s[b], dot_ss(w, load32(x, b * 32)))


@njit(inline="always", cache=True)
def _q4_1(acc, row, b, x, s):
    o = b * 20  # d f16 | m f16 | 16 B nibbles (the min is added separately)
    return fma_acc(acc, _half(row, o) * s[b], dot_us(load_nibbles(row, o + 4), load32(x, b * 32)))


@njit(inline="always", cache=True)
def _q5_0(acc, row, b, x, s):
    o = b * 22  # d f16 | qh u32 | 16 B nibbles
    w = v_subc(v_or(load_nibbles(row, o + 6), q5_high_bits(load_u32(row, o + 2))), 16)
    return fma_acc(acc, _half(row, o) * s[b], dot_ss(w, load32(x, b * 32)))


@njit(inline="always", cache=True)
def _q8_0(acc, row, b, x, s):
    o = b * 34  # d f16 | 32 x int8
    return fma_acc(acc, _half(row, o) * s[b], dot_ss(load32(row, o + 2), load32(x, b * 32)))


@njit(parallel=True, cache=True)
def mm_q4_0(raw, xq, xd, xm, out, n_tiles):
    M, nb = xd.shape
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1):
            row = raw[r]  # (nb * 18,)
            _prefetch_ahead(row)
            for m in range(M):
                x, s = xq[m], xd[m]
                acc = fzero()
                for b in range(nb):
                    acc = _q4_0(acc, row, b, x, s)
                out[m, r] = hsum(acc)


@njit(parallel=True, cache=True)
def mm_q4_1(raw, xq, xd, xm, out, n_tiles):
    M, nb = xd.shape
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1 - 1, 2):  # two rows at once: independent chains, each in its own order
            ra, rb = raw[r], raw[r + 1]  # (nb * 20,) each
            _prefetch_ahead(ra)
            _prefetch_ahead(rb)
            for m in range(M):
                x, s, sm = xq[m], xd[m], xm[m]
                acc_a, acc_b = fzero(), fzero()
                min_a = min_b = np.float32(0.0)
                for b in range(nb):
                    min_a = fma32(_half(ra, b * 20 + 2), sm[b], min_a)  # gcc contracts llama.cpp's a += b * c
                    min_b = fma32(_half(rb, b * 20 + 2), sm[b], min_b)
                    acc_a = _q4_1(acc_a, ra, b, x, s)
                    acc_b = _q4_1(acc_b, rb, b, x, s)
                out[m, r] = hsum(acc_a) + min_a
                out[m, r + 1] = hsum(acc_b) + min_b
        if (r1 - r0) % 2:
            row = raw[r1 - 1]
            for m in range(M):
                x, s, sm = xq[m], xd[m], xm[m]
                acc = fzero()
                mins = np.float32(0.0)
                for b in range(nb):
                    mins = fma32(_half(row, b * 20 + 2), sm[b], mins)
                    acc = _q4_1(acc, row, b, x, s)
                out[m, r1 - 1] = hsum(acc) + mins


@njit(parallel=True, cache=True)
def mm_q5_0(raw, xq, xd, xm, out, n_tiles):
    M, nb = xd.shape
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1):
            row = raw[r]  # (nb * 22,)
            _prefetch_ahead(row)
            for m in range(M):
                x, s = xq[m], xd[m]
                acc = fzero()
                for b in range(nb):
                    acc = _q5_0(acc, row, b, x, s)
                out[m, r] = hsum(acc)


@njit(parallel=True, cache=True)
def mm_q8_0(raw, xq, xd, xm, out, n_tiles):
    M, nb = xd.shape
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1):
            row = raw[r]  # (nb * 34,)
            _prefetch_ahead(row)
            for m in range(M):
                x, s = xq[m], xd[m]
                acc = fzero()
                for b in range(nb):
                    acc = _q8_0(acc, row, b, x, s)
                out[m, r] = hsum(acc)


@njit(cache=True)
def _group_sums(xq):
    """Integer sum of each 32-code group of the activation rows: (M, K/32) int32."""
    M, K = xq.shape
    gs = np.zeros((M, K // 32), np.int32)
    for m in range(M):
        for g in range(K // 32):
            acc = np.int32(0)
            for i in range(32):
                acc += np.int32(xq[m, 32 * g + i])
            gs[m, g] = acc
    return gs


# K-quants follow llama.cpp's AVX2 order: a super-block's scaled lane sums are
# added as integers, then one fused multiply-add by d_weight * d_activation per
# super-block. Activations are Q8_K, so xd holds the super-block scale repeated
# over its 8 groups. No fastmath.
#
# Q4_K: llama.cpp repacks Q4_K rows in groups of 8. Its kernels keep one float
# per output: a single activation row (gemv, and the M % 4 rows left over from a
# batch) adds isum * (d * dx) and imin * (dmin * dx) once per super-block; rows
# in groups of 4 (gemm) add them once per 64 elements. out = acc - accm. Both
# orders are reproduced here, chosen by the row's place in the batch.


@njit(parallel=True, cache=True)
def mm_q4_k(raw, xq, xd, xm, out, n_tiles):
    M, nb32 = xd.shape
    gs = _group_sums(xq)  # (M, K/32) integer code sums, for the min terms
    m_gemm = M // 4 * 4  # rows llama.cpp would run through its 4-row gemm
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1):
            row = raw[r]  # (nb32 / 8 * 144,)
            _prefetch_ahead(row)
            for m in range(M):
                x = xq[m]
                per_64 = m < m_gemm
                acc = np.float32(0.0)
                accm = np.float32(0.0)
                for b in range(nb32 // 8):
                    o = b * 144
                    dx = xd[m, 8 * b]
                    dd = _half(row, o) * dx
                    dm = _half(row, o + 2) * dx
                    lanes = izero()
                    imin = np.int32(0)
                    for c in range(4):
                        q = load32(row, o + 16 + 32 * c)  # groups 2c (low nibbles) and 2c+1 (high)
                        g = 8 * b + 2 * c
                        sc0, mn0 = _scale_min(row, o + 4, 2 * c)
                        sc1, mn1 = _scale_min(row, o + 4, 2 * c + 1)
                        lanes = iadd(lanes, iadd(dot_us_scaled(v_and(q, 0xF), load32(x, 32 * g), sc0),
                                                 dot_us_scaled(v_shr(q, 4), load32(x, 32 * g + 32), sc1)))
                        imin += mn0 * gs[m, g] + mn1 * gs[m, g + 1]
                        if per_64:
                            acc = fma32(np.float32(ihsum(lanes)), dd, acc)
                            accm = fma32(np.float32(imin), dm, accm)
                            lanes = izero()
                            imin = np.int32(0)
                    if not per_64:
                        acc = fma32(np.float32(ihsum(lanes)), dd, acc)
                        accm = fma32(np.float32(imin), dm, accm)
                out[m, r] = acc - accm


@njit(parallel=True, cache=True, fastmath=True)
def mm_q5_k(raw, xq, xd, xm, out, n_tiles):
    M, nb32 = xd.shape
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1):
            row = raw[r]  # (nb32 / 8 * 176,)
            _prefetch_ahead(row)
            for m in range(M):
                x, s, sm = xq[m], xd[m], xm[m]
                a0, a1 = fzero(), fzero()
                mins = np.float32(0.0)
                for b in range(nb32 // 8):
                    o = b * 176
                    d, dmin = _half(row, o), _half(row, o + 2)
                    qh = load32(row, o + 16)  # bit j of byte l: fifth bit of sub-block j, elem l
                    msum = np.float32(0.0)
                    for c in range(4):
                        q = load32(row, o + 48 + 32 * c)
                        g = 8 * b + 2 * c
                        lo = v_or(v_and(q, 0xF), v_shl(v_and(v_shr(qh, 2 * c), 1), 4))
                        hi = v_or(v_shr(q, 4), v_shl(v_and(v_shr(qh, 2 * c + 1), 1), 4))
                        sc0, mn0 = _scale_min(row, o + 4, 2 * c)
                        sc1, mn1 = _scale_min(row, o + 4, 2 * c + 1)
                        a0 = fma_acc(a0, d * np.float32(sc0) * s[g], dot_us(lo, load32(x, 32 * g)))
                        a1 = fma_acc(a1, d * np.float32(sc1) * s[g + 1], dot_us(hi, load32(x, 32 * g + 32)))
                        msum += np.float32(mn0) * sm[g] + np.float32(mn1) * sm[g + 1]
                    mins += dmin * msum
                out[m, r] = hsum(a0) + hsum(a1) - mins


@njit(parallel=True, cache=True)
def mm_q6_k(raw, xq, xd, xm, out, n_tiles):
    M, nb32 = xd.shape
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1):
            row = raw[r]  # (nb32 / 8 * 210,)
            _prefetch_ahead(row)
            sc = row.view(np.int8)  # int8 scales live at o + 192 of each block
            for m in range(M):
                x = xq[m]
                acc = fzero()
                for b in range(nb32 // 8):
                    o = b * 210
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
                            g = 8 * b + 4 * h + k
                            i = o + 192 + 8 * h + 2 * k  # two int8 scales per 32-elem group
                            isum = iadd(isum, dot_ss16(w0, load32(x, 32 * g), np.int32(sc[i]), np.int32(sc[i + 1])))
                            isum = iadd(isum, dot_ss16(w1, load32(x, 32 * g + 32), np.int32(sc[i + 2]),
                                                       np.int32(sc[i + 3])))
                    acc = fma_acc(acc, xd[m, 8 * b] * _half(row, o + 208), isum)
                out[m, r] = hsum(acc)


@njit(parallel=True, cache=True, fastmath=True)
def mm_float(raw, code, x, out, n_tiles):
    """F32 (code 0), F16 (1) and BF16 (30) weights dotted with f32 x (M, K)."""
    M, K = x.shape
    for t in prange(n_tiles):
        r0, r1 = _tile(raw.shape[0], n_tiles, t)
        for r in range(r0, r1):
            for m in range(M):
                xm_ = x[m]
                acc = np.float32(0.0)
                if code == 0:
                    w = raw[r].view(np.float32)  # (K,)
                    for i in range(K):
                        acc += w[i] * xm_[i]
                elif code == 1:
                    h = raw[r].view(np.uint16)  # (K,)
                    for i in range(K):
                        acc += f16_to_f32(h[i]) * xm_[i]
                else:
                    h = raw[r].view(np.uint16)  # (K,)
                    for i in range(K):
                        acc += bf16_to_f32(h[i]) * xm_[i]
                out[m, r] = acc


KERNELS = {2: mm_q4_0, 3: mm_q4_1, 6: mm_q5_0, 8: mm_q8_0, 12: mm_q4_k, 13: mm_q5_k, 14: mm_q6_k}
