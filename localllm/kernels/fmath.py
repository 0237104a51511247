"""Scalar float helpers whose rounding is fixed, for kernels that mirror llama.cpp's sums."""

import localllm._numba_setup  # noqa: F401  (cache dir and threading layer first)
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .vec8 import add8, any_abs_above, bcast8, div8, fma8, load8, mul8, pow2_bits8, store8, sub8, zero8


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c with one rounding (a fused multiply-add), for float32 a, b, c."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None

    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return types.float32(a, b, c), codegen


@njit(inline="always", cache=True)
def hsum8(a):
    """Sum of 8 lanes in the order of an AVX horizontal add: pairs (i, i+4), then (0+2) + (1+3)."""
    s0 = a[0] + a[4]
    s1 = a[1] + a[5]
    s2 = a[2] + a[6]
    s3 = a[3] + a[7]
    return (s0 + s2) + (s1 + s3)


# The vectorised expf that llama.cpp's AVX2 build uses for softmax and SiLU: a
# range reduction x = n*ln2 + b, a degree-5 polynomial in b, and a scale by 2^n
# built from exponent bits (an Arm optimized-routines design, max error ~1.95 ulp).
# Reproducing it keeps our softmax and SiLU bit-identical to the reference.
_SHIFT = np.float32(float.fromhex("0x1.8p23"))
_LOG2E = np.float32(float.fromhex("0x1.715476p+0"))
_LN2_HI = np.float32(float.fromhex("0x1.62e4p-1"))
_LN2_LO = np.float32(float.fromhex("0x1.7f7d1cp-20"))
_C1 = np.float32(float.fromhex("0x1.ffffecp-1"))
_C2 = np.float32(float.fromhex("0x1.fffdb6p-2"))
_C3 = np.float32(float.fromhex("0x1.555e66p-3"))
_C4 = np.float32(float.fromhex("0x1.573e2ep-5"))
_C5 = np.float32(float.fromhex("0x1.0e4020p-7"))
_ONE_BITS = np.uint32(0x3F800000)


@intrinsic
def _bits(typingctx, x):
    """The bit pattern of a float32, as uint32."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def _float(typingctx, u):
    """The float32 whose bit pattern is the uint32 u."""
    if u != types.uint32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(u), codegen


@njit(inline="always", cache=True)
def expf_ggml(x):
    """exp(x) for float32 x, rounded exactly as llama.cpp's AVX2 ggml_v_expf."""
    z = fma32(x, _LOG2E, _SHIFT)
    n = z - _SHIFT
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    e = np.uint32(_bits(z) << np.uint32(23))
    k = _float(np.uint32(e + _ONE_BITS))
    u = b * b
    j = fma32(fma32(fma32(_C5, b, _C4), u, fma32(_C3, b, _C2)), u, _C1 * b)
    if not abs(n) > np.float32(126.0):
        return fma32(j, k, k)
    g = np.uint32(0x82000000) if n <= 0 else np.uint32(0)
    s1 = _float(np.uint32(g + np.uint32(0x7F000000)))
    if abs(n) > np.float32(192.0):
        return s1 * s1
    s2 = _float(np.uint32(e - g))
    return fma32(s2, j, s2) * s1


@njit(cache=True)
def expf_ggml_call(x):
    """expf_ggml as a real call, for rare and edge paths: inlining its branches at every
    such site made the attention kernels take ~3x longer to compile, for no speed."""
    return expf_ggml(x)


@njit(inline="always", cache=True)
def expf8(x):
    """expf_ggml on 8 lanes at once, each lane rounded exactly as the scalar version.

    The common case (|n| <= 126, i.e. x above about -87) runs as vectors; a vector
    with any lane outside it is done lane by lane.
    """
    z = fma8(x, bcast8(_LOG2E), bcast8(_SHIFT))
    n = sub8(z, bcast8(_SHIFT))
    neg_n = sub8(zero8(), n)
    b = fma8(neg_n, bcast8(_LN2_LO), fma8(neg_n, bcast8(_LN2_HI), x))
    if any_abs_above(n, np.float32(126.0)):
        lanes = np.empty(8, np.float32)
        store8(lanes, 0, x)
        for i in range(8):
            lanes[i] = expf_ggml_call(lanes[i])
        return load8(lanes, 0)
    k = pow2_bits8(z)
    u = mul8(b, b)
    j = fma8(fma8(fma8(bcast8(_C5), b, bcast8(_C4)), u, fma8(bcast8(_C3), b, bcast8(_C2))), u,
             mul8(bcast8(_C1), b))
    return fma8(j, k, k)


@njit(inline="always", cache=True)
def silu8(x):
    """silu_ggml on 8 lanes."""
    return div8(x, add8(bcast8(np.float32(1.0)), expf8(sub8(zero8(), x))))


@njit(inline="always", cache=True)
def silu_ggml(x):
    """x / (1 + exp(-x)) with llama.cpp's expf."""
    return x / (np.float32(1.0) + expf_ggml_call(-x))
