"""The 8-lane exp and SiLU round every lane exactly as the scalar versions do.

Softmax and SwiGLU use the vector forms on whole blocks and the scalar forms on
the remainders; the reference agreement relies on both giving the same bits.
"""

import numpy as np
from numba import njit

from localllm.kernels.fmath import expf8, expf_ggml, silu8, silu_ggml
from localllm.kernels.vec8 import load8, store8


@njit(cache=True)
def _both_ways(x, exp_vec, exp_scalar, silu_vec, silu_scalar):
    for i in range(0, x.size, 8):
        store8(exp_vec, i, expf8(load8(x, i)))
        store8(silu_vec, i, silu8(load8(x, i)))
    for i in range(x.size):
        exp_scalar[i] = expf_ggml(x[i])
        silu_scalar[i] = silu_ggml(x[i])


def test_vector_exp_and_silu_match_scalar_bits():
    rng = np.random.default_rng(0)
    edges = [-87.5, -87.2, -88.8, 88.7, 89.0, -200.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-40,
             126.0 * np.log(2), -126.5 * np.log(2), -104.0]
    x = np.concatenate([
        rng.uniform(-110, 110, 200_000),  # crosses the |n| > 126 slow path often
        rng.standard_normal(200_000) * 4,  # the range softmax and SiLU live in
        np.array(edges * 8)[: len(edges) * 8 // 8 * 8],
        np.array(edges[:5] + [1.0, 2.0, 3.0]),  # one vector mixing slow and fast lanes
    ]).astype(np.float32)
    x = x[: x.size // 8 * 8]
    out = [np.empty_like(x) for _ in range(4)]
    _both_ways(x, *out)
    np.testing.assert_array_equal(out[0].view(np.uint32), out[1].view(np.uint32))
    np.testing.assert_array_equal(out[2].view(np.uint32), out[3].view(np.uint32))
    assert np.isfinite(out[0][200_000:400_000]).all() and (out[0][200_000:400_000] > 0).all()
