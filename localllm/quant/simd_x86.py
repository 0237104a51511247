"""AVX2 building blocks for the integer-dot matvec kernels (x86 only).

Numba never emits vpmaddubsw from plain loops (performance.md), so these
intrinsics hand LLVM the vector code directly. Three small vector types are
visible to numba code: I8x32 (<32 x i8>, one 32-element block of codes),
I32x8 (<8 x i32>, partial dot products) and F32x8 (<8 x float>, a row's
running sum). Only AVX2 intrinsics are used, so the same kernels run on
Zen3 and on AVX-512 Xeons. Import this module only when the host has AVX2.
"""

import localllm._numba_setup  # noqa: F401

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_i8, _i16, _i32, _f32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
_V8x32 = ir.VectorType(_i8, 32)
_V8x16 = ir.VectorType(_i8, 16)
_V16x16 = ir.VectorType(_i16, 16)
_V32x8 = ir.VectorType(_i32, 8)
_F32x8 = ir.VectorType(_f32, 8)


class I8x32Type(types.Type):
    def __init__(self):
        super().__init__(name="i8x32")


class I32x8Type(types.Type):
    def __init__(self):
        super().__init__(name="i32x8")


class F32x8Type(types.Type):
    def __init__(self):
        super().__init__(name="f32x8")


i8x32, i32x8, f32x8 = I8x32Type(), I32x8Type(), F32x8Type()


def _model(llty):
    class _Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, llty)

    return _Model


register_model(I8x32Type)(_model(_V8x32))
register_model(I32x8Type)(_model(_V32x8))
register_model(F32x8Type)(_model(_F32x8))


def _splat(llty, value):
    return ir.Constant(llty, [ir.Constant(llty.element, value)] * llty.count)


def _bcast(builder, llty, scalar):
    """Scalar -> vector with every lane equal."""
    v = builder.insert_element(ir.Constant(llty, ir.Undefined), scalar, ir.Constant(_i32, 0))
    return builder.shuffle_vector(v, ir.Constant(llty, ir.Undefined), ir.Constant(ir.VectorType(_i32, llty.count), [0] * llty.count))


def _call(builder, name, retty, args):
    fnty = ir.FunctionType(retty, [a.type for a in args])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, args)


def _addr(context, builder, arrty, arr, offty, off):
    """Pointer to element `off` of a 1-D array (byte `off` of the uint8/int8 ones)."""
    ary = context.make_array(arrty)(context, builder, arr)
    off = context.cast(builder, off, offty, types.intp)
    return builder.gep(ary.data, [off])


def _is_byte_array(t):
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype in (types.uint8, types.int8)


# ---- loads -----------------------------------------------------------------


@intrinsic
def load32(typingctx, arr, off):
    """32 bytes at arr[off:off+32] as I8x32 (unaligned)."""
    if not _is_byte_array(arr):
        return None

    def codegen(context, builder, sig, args):
        p = _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(p, _V8x32.as_pointer()), align=1, typ=_V8x32)

    return i8x32(arr, off), codegen


@intrinsic
def load_u16(typingctx, arr, off):
    """Little-endian uint16 at arr[off] (f16 scales)."""
    if not _is_byte_array(arr):
        return None

    def codegen(context, builder, sig, args):
        p = _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(p, _i16.as_pointer()), align=1, typ=_i16)

    return types.uint16(arr, off), codegen


# ---- byte arithmetic ---------------------------------------------------------


def _byte_op(op):
    @intrinsic
    def fn(typingctx, v, c):
        """Lane-wise byte op with a scalar (broadcast) right-hand side."""
        if v != i8x32 or not isinstance(c, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            s = builder.trunc(args[1], _i8) if args[1].type.width > 8 else args[1]
            return getattr(builder, op)(args[0], _bcast(builder, _V8x32, s))

        return i8x32(v, c), codegen

    return fn


v_and = _byte_op("and_")
v_shr = _byte_op("lshr")  # logical: codes are unsigned until the final offset
v_shl = _byte_op("shl")
v_subc = _byte_op("sub")


@intrinsic
def v_or(typingctx, a, b):
    if a != i8x32 or b != i8x32:
        return None

    def codegen(context, builder, sig, args):
        return builder.or_(args[0], args[1])

    return i8x32(a, b), codegen


# ---- integer dot products ----------------------------------------------------


def _pmadd(builder, u, s):
    """vpmaddubsw: unsigned u x signed s, adjacent pairs -> 16 x i16."""
    return _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16x16, [u, s])


def _sign_trick(builder, w, x):
    """|w| and x * sign(w), so a signed x signed product fits vpmaddubsw."""
    absw = _call(builder, "llvm.abs.v32i8", _V8x32, [w, ir.Constant(ir.IntType(1), 0)])
    sx = _call(builder, "llvm.x86.avx2.psign.b", _V8x32, [x, w])
    return absw, sx


@intrinsic
def dot_us(typingctx, u, s):
    """Unsigned codes (< 128) . signed int8 -> I32x8 partial sums."""
    if u != i8x32 or s != i8x32:
        return None

    def codegen(context, builder, sig, args):
        p = _pmadd(builder, args[0], args[1])
        return _call(builder, "llvm.x86.avx2.pmadd.wd", _V32x8, [p, _splat(_V16x16, 1)])

    return i32x8(u, s), codegen


@intrinsic
def dot_ss16(typingctx, w, x, sc0, sc1):
    """Signed int8 w . signed int8 x -> I32x8 lane sums of 4 products (sign trick), elements
    0..15 weighted by sc0 and 16..31 by sc1 (Q6_K/Q3_K)."""
    if w != i8x32 or x != i8x32:
        return None

    def codegen(context, builder, sig, args):
        absw, sx = _sign_trick(builder, args[0], args[1])
        p = _pmadd(builder, absw, sx)
        a = _bcast(builder, _V16x16, builder.trunc(args[2], _i16))
        b = _bcast(builder, _V16x16, builder.trunc(args[3], _i16))
        scales = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_i32, 16), [0] * 8 + [16] * 8))
        return _call(builder, "llvm.x86.avx2.pmadd.wd", _V32x8, [p, scales])

    return i32x8(w, x, sc0, sc1), codegen


@intrinsic
def izero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V32x8, [ir.Constant(_i32, 0)] * 8)

    return i32x8(), codegen


@intrinsic
def iadd(typingctx, a, b):
    """Lane-wise int32 add: exact, so a super-block's lanes can be summed before one float step."""
    if a != i32x8 or b != i32x8:
        return None

    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])

    return i32x8(a, b), codegen


def _half_sums4(builder, a, b, c, d):
    """[a b c d | a b c d]: each I32x8's low-half lane sum, then its high-half one (three vphaddd)."""
    def hadd(x, y):
        return _call(builder, "llvm.x86.avx2.phadd.d", _V32x8, [x, y])

    return hadd(hadd(a, b), hadd(c, d))


# ---- float accumulation --------------------------------------------------------


@intrinsic
def fzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_F32x8, [ir.Constant(_f32, 0.0)] * 8)

    return f32x8(), codegen


@intrinsic
def fma_acc(typingctx, acc, scale, v):
    """acc + scale * float(v), lane-wise (vcvtdq2ps + vfmadd), always fused, as llama.cpp's AVX2 code is."""
    if acc != f32x8 or v != i32x8:
        return None

    def codegen(context, builder, sig, args):
        s = context.cast(builder, args[1], sig.args[1], types.float32)
        fv = builder.sitofp(args[2], _F32x8)
        return _call(builder, "llvm.fma.v8f32", _F32x8, [fv, _bcast(builder, _F32x8, s), args[0]])

    return f32x8(acc, scale, v), codegen


@intrinsic
def hsum(typingctx, acc):
    """Sum of the 8 lanes, once per output element, in llama.cpp's order:
    s_i = v_i + v_(i+4), then (s_0 + s_2) + (s_1 + s_3)."""
    if acc != f32x8:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_i32, 4), [0, 1, 2, 3]))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_i32, 4), [4, 5, 6, 7]))
        s = builder.fadd(lo, hi)
        e = [builder.extract_element(s, ir.Constant(_i32, i)) for i in range(4)]
        return builder.fadd(builder.fadd(e[0], e[2]), builder.fadd(e[1], e[3]))

    return types.float32(acc), codegen


@intrinsic
def fmadd(typingctx, acc, a, b):
    """acc + a * b, lane-wise, always fused (llvm.fma): the order a float dot keeps for every M."""
    if acc != f32x8 or a != f32x8 or b != f32x8:
        return None

    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.fma.v8f32", _F32x8, [args[1], args[2], args[0]])

    return f32x8(acc, a, b), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b, lane-wise."""
    if a != f32x8 or b != f32x8:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return f32x8(a, b), codegen


@intrinsic
def load8(typingctx, arr, idx):
    """Elements idx .. idx+7 of a 1-D array as F32x8: float32 as they are, uint16 as f16
    (vcvtph2ps, exact), int16 as bf16 bit patterns (shifted into place, exact)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype in (types.float32, types.uint16,
                                                                             types.int16)):
        return None
    kind = arr.dtype

    def codegen(context, builder, sig, args):
        p = _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        if kind == types.float32:
            return builder.load(builder.bitcast(p, _F32x8.as_pointer()), align=1, typ=_F32x8)
        v16 = ir.VectorType(_i16, 8)
        h = builder.load(builder.bitcast(p, v16.as_pointer()), align=1, typ=v16)
        if kind == types.uint16:
            return builder.fpext(builder.bitcast(h, ir.VectorType(ir.HalfType(), 8)), _F32x8)
        return builder.bitcast(builder.shl(builder.zext(h, _V32x8), _splat(_V32x8, 16)), _F32x8)

    return f32x8(arr, idx), codegen


@intrinsic
def prefetch(typingctx, arr, off):
    """Ask for the cache line holding byte `off` of a 1-D byte array (no fault past the end)."""
    if not (_is_byte_array(arr) and isinstance(off, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        p = builder.bitcast(_addr(context, builder, sig.args[0], args[0], sig.args[1], args[1]), ir.IntType(8).as_pointer())
        # llvm.prefetch(ptr, rw=0 read, locality=3 keep in all levels, cache=1 data)
        _call(builder, "llvm.prefetch.p0i8", ir.VoidType(), [p, ir.Constant(_i32, 0), ir.Constant(_i32, 3), ir.Constant(_i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, off), codegen


# ---- eight elements side by side: two weight rows x four activation rows ------------
# Lane j < 4 holds (row a, activation row j), lane 4 + j (row b, activation row j). The
# K-quant four-row steps keep their float accumulators this way, one lane per output
# element, so each lane sees exactly the scalar one-row step's operations.


def _ints(builder, args):
    return [builder.trunc(a, _i32) if a.type.width > 32 else builder.sext(a, _i32) if a.type.width < 32 else a
            for a in args]


