"""Half-precision helpers usable inside numba kernels.

Numba's CPU target has no float16 arithmetic, so GGUF's f16 scales are read as
uint16 and widened here. On x86 the LLVM `fpext half` compiles to vcvtph2ps and
is exact, subnormals included; elsewhere the bit-twiddling path does the same.
"""

import localllm._numba_setup  # noqa: F401  (cache dir and threading layer first)
import numpy as np
from numba import njit, types
from numba.extending import intrinsic
from llvmlite import ir


@intrinsic
def _fpext_half(typingctx, bits):
    """uint16 bit pattern -> float32, via LLVM's bitcast + fpext."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        (val,) = args
        half = builder.bitcast(val, ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return sig, codegen


@intrinsic
def _fptrunc_half(typingctx, val):
    """float32 -> f16 bits (uint16), rounding to nearest even like numpy's astype."""
    sig = types.uint16(types.float32)

    def codegen(context, builder, signature, args):
        half = builder.fptrunc(args[0], ir.HalfType())
        return builder.bitcast(half, ir.IntType(16))

    return sig, codegen


@njit(inline="always", cache=True)
def f32_to_f16(v):
    """Narrow one float32 to f16 bits (uint16)."""
    return _fptrunc_half(np.float32(v))


@njit(inline="always", cache=True)
def round_f16(v):
    """v rounded to the nearest f16 value, as float32 (what storing a scale as f16 does)."""
    return _fpext_half(_fptrunc_half(np.float32(v)))


@njit(inline="always", cache=True)
def f16_to_f32(bits):
    """Widen one f16 value given as its uint16 bits."""
    return _fpext_half(np.uint16(bits))


@njit(inline="always", cache=True)
def bf16_to_f32(bits):
    """bf16 is the top half of an f32: shift it back into place."""
    return np.uint32(np.uint32(bits) << np.uint32(16)).view(np.float32)
