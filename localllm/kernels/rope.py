"""Rotary position embedding, in place, for both pairings.

"normal" (llama): rotate adjacent pairs (2i, 2i+1).
"neox" (gemma, qwen2): rotate pairs (i, i + rope_dim/2).
Frequency i is base^(-2i/rope_dim), divided by an optional per-frequency factor
(llama 3's rope_freqs tensor); positions are divided by a linear scale.
"""

import numpy as np
from numba import njit

import localllm._numba_setup  # noqa: F401


@njit(cache=True)
def rope_inplace(x, positions, base, rope_dim, neox, pos_scale, freq_factors):
    """x: (T, n_heads, head_dim) float32, rotated in place; positions: (T,) int32;
    freq_factors: (rope_dim/2,) float32, ones when the model has none."""
    T, H, _ = x.shape
    half = rope_dim // 2
    for t in range(T):
        p = positions[t] / pos_scale
        for i in range(half):
            theta = p * base ** (-2.0 * i / rope_dim) / freq_factors[i]
            c = np.float32(np.cos(theta))
            s = np.float32(np.sin(theta))
            if neox:
                a, b = i, i + half
            else:
                a, b = 2 * i, 2 * i + 1
            for h in range(H):
                x0 = x[t, h, a]
                x1 = x[t, h, b]
                x[t, h, a] = x0 * c - x1 * s
                x[t, h, b] = x0 * s + x1 * c
