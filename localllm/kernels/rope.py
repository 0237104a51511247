"""Rotary position embedding, in place, for both pairings.

"normal" (llama): rotate adjacent pairs (2i, 2i+1).
"neox" (gemma, qwen2): rotate pairs (i, i + rope_dim/2).
Frequency i is base^(-2i/rope_dim), divided by an optional per-frequency factor
(llama 3's rope_freqs tensor); positions are divided by a linear scale.

The angles are built the way llama.cpp builds them, in float32 by repeated
multiplication (theta_{i+1} = theta_i * base^(-2/rope_dim)), because the
reference logits depend on those exact roundings at later positions.
"""

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401


@njit(inline="always", cache=True)
def _rotate(x, t, a, b, c, s):
    for h in range(x.shape[1]):
        x0 = x[t, h, a]
        x1 = x[t, h, b]
        x[t, h, a] = x0 * c - x1 * s
        x[t, h, b] = x0 * s + x1 * c


@njit(inline="always", cache=True)
def _rope_row(q, k, t, positions, theta_scale, inv_scale, rope_dim, neox, freq_factors):
    half = rope_dim // 2
    theta = np.float32(positions[t])
    for i in range(half):
        angle = inv_scale * (theta / freq_factors[i])
        c = np.cos(angle)
        s = np.sin(angle)
        theta = np.float32(theta * theta_scale)
        if neox:
            a, b = i, i + half
        else:
            a, b = 2 * i, 2 * i + 1
        _rotate(q, t, a, b, c, s)
        _rotate(k, t, a, b, c, s)


@njit(inline="always", cache=True)
def _scales(base, rope_dim, pos_scale):
    theta_scale = np.float32(np.power(np.float32(base), np.float32(-2.0) / np.float32(rope_dim)))
    return theta_scale, np.float32(1.0) / np.float32(pos_scale)


@njit(cache=True)
def rope_qk(q, k, positions, base, rope_dim, neox, pos_scale, freq_factors):
    """Rotate queries q (T, H, d) and keys k (T, G, d) in place, float32; positions: (T,)
    int32; freq_factors: (rope_dim/2,) float32, ones when the model has none. One call
    for both, so each angle's cos and sin are computed once."""
    theta_scale, inv_scale = _scales(base, rope_dim, pos_scale)
    for t in range(q.shape[0]):
        _rope_row(q, k, t, positions, theta_scale, inv_scale, rope_dim, neox, freq_factors)


@njit(cache=True, parallel=True)
def rope_qk_par(q, k, positions, base, rope_dim, neox, pos_scale, freq_factors):
    """rope_qk with the rows spread over threads (each row rotated the same way)."""
    theta_scale, inv_scale = _scales(base, rope_dim, pos_scale)
    for t in prange(q.shape[0]):  # int64: prange's index is unsigned in the parfor, one compile of the callee for both
        _rope_row(q, k, np.int64(t), positions, theta_scale, inv_scale, rope_dim, neox, freq_factors)

