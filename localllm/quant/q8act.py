"""On-the-fly activation quantization for the integer-dot matvec kernels.

One format serves every weight type: int8 codes in blocks of 32 with an f32
scale, plus the block's scaled code sum (Q8_1-style) so that weight formats
with a min (Q4_1, Q4_K, Q5_K) fold it in with one multiply per block. Blocks
of 32 also line up with the 32-element sub-blocks of the K-quants (Q6_K's
16-element scales go into the integer dot), so no separate Q8_K layout is needed.
Codes stay within [-127, 127]; the sign trick in simd_x86 relies on that.
"""

import localllm._numba_setup  # noqa: F401

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True)
def quantize_q8(x, xq, xd, xm):
    """x (M, K) f32 -> xq (M, K) int8, xd (M, K/32) scale, xm (M, K/32) scale * sum(codes)."""
    M, K = x.shape
    for m in range(M):
        for b in range(K // 32):
            e = b * 32
            amax = np.float32(0.0)
            for i in range(32):
                amax = max(amax, abs(x[m, e + i]))
            d = amax / np.float32(127.0)
            inv = np.float32(1.0) / d if amax > 0 else np.float32(0.0)
            s = np.int32(0)
            for i in range(32):
                q = np.int32(np.rint(x[m, e + i] * inv))
                xq[m, e + i] = q
                s = np.int32(s + q)
            xd[m, b] = d
            xm[m, b] = d * np.float32(s)
