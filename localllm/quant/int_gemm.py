"""Integer-dot matmul kernels for the x86 paths, one entry kernel per block format.

Every kernel has one signature (one specialization each):
    raw (N, row_bytes) uint8 readonly; xq (M, K) int8; xd, xm (M, K/32) f32;
    xs (M, K/32) int32 (q8act's layout); out (M, N) f32; n_rtiles: row tiles.
Two arithmetics, one per format, each the same for every M and on both paths:
  * Q4_0, Q4_1, Q5_0, Q8_0 and Q4_K: the row-lane arithmetic (row_lanes, simd_rows16): one exact integer dot
    and one float step per block and output, 16 weight rows per vector;
  * the other formats: the block arithmetic from blocks_avx512 on the avx512 path,
    for the formats it covers, and from blocks_avx2 otherwise; gemm_tiles does the
    tiling (tile_wide where blocks_avx512 has a format's 16-row functions, tile_item
    elsewhere). Both paths produce the same 8 int32 lanes per block and the same
    float steps.
So the two paths' results are equal bit for bit.

Import only on x86 with AVX2 (isa.KERNEL_PATH is 'avx2' or 'avx512').
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit, prange

from localllm.isa import KERNEL_PATH
from localllm.quant import blocks_avx2 as B2
from localllm.quant.gemm_tiles import four_fins, four_inits, four_steps, n_items, tile_item, tile_wide
from localllm.quant.row_lanes import k4_step, lanes_item, scale_min_step, scale_step
from localllm.quant.simd_rows16 import (Q8_0_OFFSET, q4_0_dot, q4_0_group, q4_1_group, q4_k_dot, q4_k_group, q5_0_dot,
                                         q5_0_group, q8_0_dot, q8_0_group)

if KERNEL_PATH == "avx512":
    from localllm.quant import blocks_avx512 as B
else:
    B = B2


def _fmt(step, init="vec_init", fin="vec_fin", four=None):
    """(init, step, fin, init4, step4, fin4) of one format, from the path's module if it has
    the format. four: the prefix of the format's own four-row functions (`four`_init4,
    _step4, _fin4); without it, or where the module lacks them, four rows run the one-row
    step four times (gemm_tiles)."""
    mod = B if hasattr(B, step) else B2
    one = getattr(mod, init), getattr(mod, step), getattr(mod, fin)
    if four is None or not hasattr(mod, four + "_step4"):
        return one + (four_inits, four_steps, four_fins)
    return one + (getattr(mod, four + "_init4"), getattr(mod, four + "_step4"), getattr(mod, four + "_fin4"))


_Q5_K_I, _Q5_K_S, _Q5_K_F, _Q5_K_I4, _Q5_K_S4, _Q5_K_F4 = _fmt("q5_k_step", "q5_k_init", "q5_k_fin")
_Q6_K_I, _Q6_K_S, _Q6_K_F, _Q6_K_I4, _Q6_K_S4, _Q6_K_F4 = _fmt("q6_k_step")


# Per format: one work item (a plain function, where the format's functions are globals)
# and the parallel loop over items. Units per row: K/32 blocks, or K/256 for K-quants.
# The item index goes in as int64: numba types a prange index signed when it types the
# loop and unsigned when it lowers the parfor, and each type would compile the item again
# (measured: 6 s more per K-quant format on a cold start).


if KERNEL_PATH == "avx512":
    # Prompt chunks take these formats 16 activation rows per pass (blocks_avx512's wide functions).

    @njit(cache=True)
    def _q6_k_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
        tile_wide(B.q6_k_codes, B.ROWS, B.wide_acts_k, B.wide_init, B.q6_k_wide_step, B.wide_fin,
                  _Q6_K_I, _Q6_K_S, _Q6_K_F, _Q6_K_I4, _Q6_K_S4, _Q6_K_F4,
                  raw, xq, xd, xm, xs, out, xd.shape[1] // 8, n_rtiles, it)

else:

    @njit(cache=True)
    def _q6_k_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
        tile_item(_Q6_K_I, _Q6_K_S, _Q6_K_F, _Q6_K_I4, _Q6_K_S4, _Q6_K_F4,
                  raw, xq, xd, xm, xs, out, xd.shape[1] // 8, n_rtiles, it)


@njit(cache=True)
def _q4_0_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
    lanes_item((q4_0_group, q4_0_dot, 8, scale_step, 32), raw, xq, xd, xm, xs, out, n_rtiles, it)


@njit(cache=True)
def _q4_1_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
    lanes_item((q4_1_group, q4_0_dot, 0, scale_min_step, 32), raw, xq, xd, xm, xs, out, n_rtiles, it)


@njit(cache=True)
def _q5_0_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
    lanes_item((q5_0_group, q5_0_dot, 16, scale_step, 32), raw, xq, xd, xm, xs, out, n_rtiles, it)


@njit(cache=True)
def _q8_0_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
    lanes_item((q8_0_group, q8_0_dot, Q8_0_OFFSET, scale_step, 32), raw, xq, xd, xm, xs, out, n_rtiles, it)


@njit(cache=True)
def _q4_k_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
    lanes_item((q4_k_group, q4_k_dot, 0, k4_step, 64), raw, xq, xd, xm, xs, out, n_rtiles, it)


@njit(cache=True)
def _q5_k_item(raw, xq, xd, xm, xs, out, n_rtiles, it):
    tile_item(_Q5_K_I, _Q5_K_S, _Q5_K_F, _Q5_K_I4, _Q5_K_S4, _Q5_K_F4,
              raw, xq, xd, xm, xs, out, xd.shape[1] // 8, n_rtiles, it)


@njit(parallel=True, cache=True)
def mm_q4_0(raw, xq, xd, xm, xs, out, n_rtiles):
    for it in prange(n_items(xq.shape[0], n_rtiles)):
        _q4_0_item(raw, xq, xd, xm, xs, out, n_rtiles, np.int64(it))


@njit(parallel=True, cache=True)
def mm_q4_1(raw, xq, xd, xm, xs, out, n_rtiles):
    for it in prange(n_items(xq.shape[0], n_rtiles)):
        _q4_1_item(raw, xq, xd, xm, xs, out, n_rtiles, np.int64(it))


@njit(parallel=True, cache=True)
def mm_q5_0(raw, xq, xd, xm, xs, out, n_rtiles):
    for it in prange(n_items(xq.shape[0], n_rtiles)):
        _q5_0_item(raw, xq, xd, xm, xs, out, n_rtiles, np.int64(it))


@njit(parallel=True, cache=True)
def mm_q8_0(raw, xq, xd, xm, xs, out, n_rtiles):
    for it in prange(n_items(xq.shape[0], n_rtiles)):
        _q8_0_item(raw, xq, xd, xm, xs, out, n_rtiles, np.int64(it))


@njit(parallel=True, cache=True)
def mm_q4_k(raw, xq, xd, xm, xs, out, n_rtiles):
    for it in prange(n_items(xq.shape[0], n_rtiles)):
        _q4_k_item(raw, xq, xd, xm, xs, out, n_rtiles, np.int64(it))


@njit(parallel=True, cache=True)
def mm_q5_k(raw, xq, xd, xm, xs, out, n_rtiles):
    for it in prange(n_items(xq.shape[0], n_rtiles)):
        _q5_k_item(raw, xq, xd, xm, xs, out, n_rtiles, np.int64(it))


@njit(parallel=True, cache=True)
def mm_q6_k(raw, xq, xd, xm, xs, out, n_rtiles):
    for it in prange(n_items(xq.shape[0], n_rtiles)):
        _q6_k_item(raw, xq, xd, xm, xs, out, n_rtiles, np.int64(it))


# Weight type code -> kernel (codes as in formats.py).
KERNELS = {2: mm_q4_0, 3: mm_q4_1, 6: mm_q5_0, 8: mm_q8_0, 12: mm_q4_k, 13: mm_q5_k, 14: mm_q6_k}
