"""Reading and writing KV-cache elements that are stored as f16 bits or f32."""

import numpy as np
from numba import njit, types
from numba.extending import overload

import localllm._numba_setup  # noqa: F401  (threading layer and cache dir first)
from localllm.quant.f16 import f16_to_f32, f32_to_f16, round_f16


def as_f32(v):
    """Widen a cache element to float32 (dispatches on the element type inside njit)."""
    raise NotImplementedError  # only callable from numba-compiled code


@overload(as_f32, inline="always")
def _as_f32_impl(v):
    if isinstance(v, types.Integer):
        return lambda v: f16_to_f32(v)
    return lambda v: np.float32(v)


def round_like(v, like):
    """v rounded to the cache's element precision: f16 for f16 caches, unchanged for f32.

    llama.cpp converts a matmul's second operand to the first one's type, so
    with an f16 cache the queries (for K) and the probabilities (for V) pass
    through f16; with an f32 cache they stay f32.
    """
    raise NotImplementedError  # only callable from numba-compiled code


@overload(round_like, inline="always")
def _round_like_impl(v, like):
    if isinstance(like, types.Integer):
        return lambda v, like: round_f16(v)
    return lambda v, like: np.float32(v)


def from_f32(v, like):
    raise NotImplementedError  # only callable from numba-compiled code


@overload(from_f32, inline="always")
def _from_f32_impl(v, like):
    if isinstance(like, types.Integer):
        return lambda v, like: f32_to_f16(v)
    return lambda v, like: np.float32(v)


@njit(inline="always", cache=True)
def _store_rows(dst, src, start):
    T, n_kv, d = src.shape
    for t in range(T):
        for g in range(n_kv):
            for i in range(d):
                dst[g, start + t, i] = from_f32(src[t, g, i], dst[0, 0, 0])


@njit(cache=True)
def store_kv(k_dst, v_dst, k, v, start):
    """k_dst[g, start + t, :] = k[t, g, :] (and the same for v), converted to the cache's type.

    k_dst, v_dst: (n_kv, n_ctx, d) cache slices; k, v: (T, n_kv, d) float32 fresh keys and values.
    """
    _store_rows(k_dst, k, start)
    _store_rows(v_dst, v, start)
