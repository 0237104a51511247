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
def _store_rows(pool, src, slots):
    T, n_kv, d = src.shape
    bs = pool.shape[2]
    for t in range(T):
        b, o = slots[t] // bs, slots[t] % bs
        for g in range(n_kv):
            for i in range(d):
                pool[b, g, o, i] = from_f32(src[t, g, i], pool[0, 0, 0, 0])


@njit(cache=True)
def store_kv(k_pool, v_pool, k, v, slots):
    """Write row t's fresh key and value at cache slot slots[t] (block slots[t] // bs,
    offset slots[t] % bs), converted to the cache's type.

    k_pool, v_pool: (n_blocks, n_kv, bs, d) one layer of a KVPool; k, v: (T, n_kv, d)
    float32; slots: (T,) int64.
    """
    _store_rows(k_pool, k, slots)
    _store_rows(v_pool, v, slots)
