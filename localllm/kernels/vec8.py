"""8-lane float32 vectors for numba kernels, as plain LLVM vector IR.

Numba does not vectorize a loop whose float sums must keep their order (that
needs fastmath, which reorders them). These helpers hand LLVM the vectors
directly, so a kernel can keep llama.cpp's exact lane layout and still run as
SIMD: <8 x float> becomes a ymm register on x86 and two NEON registers on ARM.
"""

import localllm._numba_setup  # noqa: F401

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_f32 = ir.FloatType()
_i32 = ir.IntType(32)
_V = ir.VectorType(_f32, 8)


class Vec8Type(types.Type):
    def __init__(self):
        super().__init__(name="vec8")


vec8 = Vec8Type()


@register_model(Vec8Type)
class _Vec8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V)


def _ptr(context, builder, arrty, arr, off):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [off])


def _is_vector_array(t):
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype in (types.float32, types.uint16)


@intrinsic
def zero8(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V, [ir.Constant(_f32, 0.0)] * 8)

    return vec8(), codegen


@intrinsic
def load8(typingctx, arr, off):
    """arr[off:off+8] as float32 lanes; uint16 arrays hold f16 bits and are widened exactly."""
    if not _is_vector_array(arr) or not isinstance(off, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        o = context.cast(builder, args[1], sig.args[1], types.intp)
        p = _ptr(context, builder, sig.args[0], args[0], o)
        if sig.args[0].dtype == types.float32:
            return builder.load(builder.bitcast(p, _V.as_pointer()), align=4)
        hv = ir.VectorType(ir.IntType(16), 8)
        bits = builder.load(builder.bitcast(p, hv.as_pointer()), align=2)
        return builder.fpext(builder.bitcast(bits, ir.VectorType(ir.HalfType(), 8)), _V)

    return vec8(arr, off), codegen


@intrinsic
def store8(typingctx, arr, off, v):
    """arr[off:off+8] = v for a float32 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and v == vec8):
        return None

    def codegen(context, builder, sig, args):
        o = context.cast(builder, args[1], sig.args[1], types.intp)
        p = _ptr(context, builder, sig.args[0], args[0], o)
        builder.store(args[2], builder.bitcast(p, _V.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(arr, off, v), codegen


@intrinsic
def bcast8(typingctx, x):
    """Every lane equal to the float32 x."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        v = builder.insert_element(ir.Constant(_V, ir.Undefined), args[0], ir.Constant(_i32, 0))
        return builder.shuffle_vector(v, ir.Constant(_V, ir.Undefined), ir.Constant(ir.VectorType(_i32, 8), [0] * 8))

    return vec8(x), codegen


@intrinsic
def fma8(typingctx, a, b, c):
    """a * b + c lane-wise, each with one rounding."""
    if not (a == vec8 and b == vec8 and c == vec8):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V, _V, _V]), "llvm.fma.v8f32")
        return builder.call(fn, args)

    return vec8(a, b, c), codegen


@intrinsic
def add8(typingctx, a, b):
    if not (a == vec8 and b == vec8):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return vec8(a, b), codegen


def _halves(builder, v):
    lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_i32, 4), [0, 1, 2, 3]))
    hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_i32, 4), [4, 5, 6, 7]))
    s = builder.fadd(lo, hi)
    return [builder.extract_element(s, ir.Constant(_i32, i)) for i in range(4)]


@intrinsic
def hsum_movehl(typingctx, v):
    """Lane sum as an add of halves then movehl/movehdup: (s0 + s2) + (s1 + s3), s_i = v_i + v_(i+4)."""
    if v != vec8:
        return None

    def codegen(context, builder, sig, args):
        s = _halves(builder, args[0])
        return builder.fadd(builder.fadd(s[0], s[2]), builder.fadd(s[1], s[3]))

    return types.float32(v), codegen


def _binary(op: str, doc: str):
    def typer(typingctx, a, b):
        if not (a == vec8 and b == vec8):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return vec8(a, b), codegen

    typer.__doc__ = doc
    return intrinsic(typer)


sub8 = _binary("fsub", "a - b lane-wise.")
mul8 = _binary("fmul", "a * b lane-wise.")
div8 = _binary("fdiv", "a / b lane-wise (correctly rounded, like the scalar division).")


@intrinsic
def pow2_bits8(typingctx, z):
    """Lane-wise float from bits (bits(z) << 23) + bits(1.0): expf's 2^n scale, as ggml builds it."""
    if z != vec8:
        return None

    def codegen(context, builder, sig, args):
        iv = ir.VectorType(_i32, 8)
        bits = builder.shl(builder.bitcast(args[0], iv), ir.Constant(iv, [23] * 8))
        return builder.bitcast(builder.add(bits, ir.Constant(iv, [0x3F800000] * 8)), _V)

    return vec8(z), codegen


@intrinsic
def any_abs_above(typingctx, v, limit):
    """True when some lane has |v| > limit (NaN lanes compare false, as in scalar code)."""
    if not (v == vec8 and limit == types.float32):
        return None

    def codegen(context, builder, sig, args):
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V]), "llvm.fabs.v8f32")
        lim = builder.insert_element(ir.Constant(_V, ir.Undefined), args[1], ir.Constant(_i32, 0))
        lim = builder.shuffle_vector(lim, ir.Constant(_V, ir.Undefined), ir.Constant(ir.VectorType(_i32, 8), [0] * 8))
        mask = builder.fcmp_ordered(">", builder.call(fabs, [args[0]]), lim)
        return builder.icmp_unsigned("!=", builder.bitcast(mask, ir.IntType(8)), ir.Constant(ir.IntType(8), 0))

    return types.boolean(v, limit), codegen
