"""16-lane float32 vectors for numba kernels, as plain LLVM vector IR (see vec8).

A <16 x float> is one zmm register on the avx512 path (HAS_ZMM) and two ymm
registers elsewhere. The attention kernels use it to run two 8-lane chains
side by side: lanes 0-7 and 8-15 each keep the lane order of an 8-lane vec8
chain, so a result equals the vec8 code's bit for bit.
"""

import localllm._numba_setup  # noqa: F401

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from localllm.isa import KERNEL_PATH

# Whether to run the 16-lane loops: they pay only with 512-bit registers (on AVX2 their
# accumulators take twice the registers and spill). Tied to the kernel path, so forcing
# LOCALLLM_KERNELS=avx2 on an AVX-512 machine runs (and tests) the 8-lane code.
HAS_ZMM = KERNEL_PATH == "avx512"

_f32 = ir.FloatType()
_i32 = ir.IntType(32)
_V = ir.VectorType(_f32, 16)


class Vec16Type(types.Type):
    def __init__(self):
        super().__init__(name="vec16")


vec16 = Vec16Type()


@register_model(Vec16Type)
class _Vec16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V)


def _is_vector_array(t):
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype in (types.float32, types.uint16)


def _load(context, builder, arrty, arr, off, n):
    """n float32 lanes from arr[off:off+n]; uint16 arrays hold f16 bits, widened exactly."""
    ary = context.make_array(arrty)(context, builder, arr)
    p = builder.gep(ary.data, [context.cast(builder, off[1], off[0], types.intp)])
    if arrty.dtype == types.float32:
        return builder.load(builder.bitcast(p, ir.VectorType(_f32, n).as_pointer()), align=4)
    bits = builder.load(builder.bitcast(p, ir.VectorType(ir.IntType(16), n).as_pointer()), align=2)
    return builder.fpext(builder.bitcast(bits, ir.VectorType(ir.HalfType(), n)), ir.VectorType(_f32, n))


@intrinsic
def zero16(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V, [ir.Constant(_f32, 0.0)] * 16)

    return vec16(), codegen


@intrinsic
def load16(typingctx, arr, off):
    """arr[off:off+16] as float32 lanes (uint16 arrays: f16 bits)."""
    if not _is_vector_array(arr) or not isinstance(off, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig.args[0], args[0], (sig.args[1], args[1]), 16)

    return vec16(arr, off), codegen


@intrinsic
def load8x2(typingctx, a, ia, b, ib):
    """a[ia:ia+8] in lanes 0-7 and b[ib:ib+8] in lanes 8-15 (two rows side by side)."""
    if not (_is_vector_array(a) and _is_vector_array(b) and a.dtype == b.dtype
            and isinstance(ia, types.Integer) and isinstance(ib, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        lo = _load(context, builder, sig.args[0], args[0], (sig.args[1], args[1]), 8)
        hi = _load(context, builder, sig.args[2], args[2], (sig.args[3], args[3]), 8)
        return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_i32, 16), list(range(16))))

    return vec16(a, ia, b, ib), codegen


@intrinsic
def store16(typingctx, arr, off, v):
    """arr[off:off+16] = v for a float32 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and v == vec16):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        p = builder.gep(ary.data, [context.cast(builder, args[1], sig.args[1], types.intp)])
        builder.store(args[2], builder.bitcast(p, _V.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(arr, off, v), codegen


@intrinsic
def bcast16(typingctx, x):
    """Every lane equal to the float32 x."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        v = builder.insert_element(ir.Constant(_V, ir.Undefined), args[0], ir.Constant(_i32, 0))
        return builder.shuffle_vector(v, ir.Constant(_V, ir.Undefined), ir.Constant(ir.VectorType(_i32, 16), [0] * 16))

    return vec16(x), codegen


@intrinsic
def fma16(typingctx, a, b, c):
    """a * b + c lane-wise, each with one rounding."""
    if not (a == vec16 and b == vec16 and c == vec16):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V, _V, _V]), "llvm.fma.v16f32")
        return builder.call(fn, args)

    return vec16(a, b, c), codegen


def _hsum_half(builder, v, base):
    """vec8.hsum_movehl of lanes base..base+7: (s0 + s2) + (s1 + s3), s_i = v_i + v_(i+4)."""
    lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_i32, 4), [base, base + 1, base + 2, base + 3]))
    hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_i32, 4), [base + 4, base + 5, base + 6, base + 7]))
    s = builder.fadd(lo, hi)
    e = [builder.extract_element(s, ir.Constant(_i32, i)) for i in range(4)]
    return builder.fadd(builder.fadd(e[0], e[2]), builder.fadd(e[1], e[3]))


@intrinsic
def hsum_halves(typingctx, v):
    """(lane sum of lanes 0-7, of lanes 8-15), each in vec8.hsum_movehl's order."""
    if v != vec16:
        return None

    def codegen(context, builder, sig, args):
        halves = [_hsum_half(builder, args[0], 0), _hsum_half(builder, args[0], 8)]
        return context.make_tuple(builder, sig.return_type, halves)

    return types.UniTuple(types.float32, 2)(v), codegen
