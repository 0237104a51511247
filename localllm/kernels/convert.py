"""Reading and writing KV-cache elements that are stored as f16 bits or f32."""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

import localllm._numba_setup  # noqa: F401  (threading layer and cache dir first)
from localllm.quant.f16 import f16_to_f32


@intrinsic
def _fptrunc_half(typingctx, val):
    """float32 -> f16 bits (uint16), rounding to nearest even like numpy's astype."""
    sig = types.uint16(types.float32)

    def codegen(context, builder, signature, args):
        half = builder.fptrunc(args[0], ir.HalfType())
        return builder.bitcast(half, ir.IntType(16))

    return sig, codegen


def as_f32(v):
    """Widen a cache element to float32 (dispatches on the element type inside njit)."""
    raise NotImplementedError  # only callable from numba-compiled code


@overload(as_f32, inline="always")
def _as_f32_impl(v):
    if isinstance(v, types.Integer):
        return lambda v: f16_to_f32(v)
    return lambda v: np.float32(v)


def from_f32(v, like):
    raise NotImplementedError  # only callable from numba-compiled code


@overload(from_f32, inline="always")
def _from_f32_impl(v, like):
    if isinstance(like, types.Integer):
        return lambda v, like: _fptrunc_half(np.float32(v))
    return lambda v, like: np.float32(v)


@njit(cache=True)
def store_rows(dst, src, start):
    """dst[g, start + t, :] = src[t, g, :] converted to dst's element type.

    dst: (n_kv, n_ctx, d) cache; src: (T, n_kv, d) float32 fresh keys or values.
    """
    T, n_kv, d = src.shape
    for t in range(T):
        for g in range(n_kv):
            for i in range(d):
                dst[g, start + t, i] = from_f32(src[t, g, i], dst[0, 0, 0])
