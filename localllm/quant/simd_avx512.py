"""AVX-512 (F/BW/VL + VNNI) building blocks: two weight rows in one 512-bit register.

The AVX-512 kernels keep the AVX2 path's arithmetic exactly, only wider: the low
256 bits of every vector belong to weight row a and the high 256 bits to row b,
so each half is the 8-lane vector the AVX2 kernel would hold for that row.
vpdpbusd (VNNI) computes the same 8 int32 lanes per 32-block that vpmaddubsw +
vpmaddwd do, and the float steps are lane-wise, so both paths give equal bits.

Types seen by numba code: I8x64 (<64 x i8>), I32x16 and F32x16.
Import only when isa.KERNEL_PATH is 'avx512': executing these on a CPU without
AVX-512 faults.
"""

import localllm._numba_setup  # noqa: F401

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

from localllm.quant.simd_x86 import _addr, _bcast, _call, _splat
from localllm.quant.simd_x86 import _is_byte_array as _bytes

_i1, _i8, _i16, _i32, _f32 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
_B64 = ir.VectorType(_i8, 64)
_B32 = ir.VectorType(_i8, 32)
_B16 = ir.VectorType(_i8, 16)
_D16 = ir.VectorType(_i32, 16)
_D8 = ir.VectorType(_i32, 8)
_F16 = ir.VectorType(_f32, 16)


def _vtype(name, llty):
    cls = type(name + "Type", (types.Type,), {"__init__": lambda self: types.Type.__init__(self, name=name)})

    @register_model(cls)
    class _Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, llty)

    return cls()


i8x64 = _vtype("i8x64", _B64)
i32x16 = _vtype("i32x16", _D16)
f32x16 = _vtype("f32x16", _F16)


def _idx(values):
    return ir.Constant(ir.VectorType(_i32, len(values)), list(values))


def _halves(builder, llty, a, b):
    """A vector of llty whose low half is scalar a's splat and high half b's."""
    n = llty.count
    return builder.shuffle_vector(_bcast(builder, llty, a), _bcast(builder, llty, b),
                                  _idx([0] * (n // 2) + [n] * (n // 2)))


def _load(builder, ptr, llty):
    return builder.load(builder.bitcast(ptr, llty.as_pointer()), align=1, typ=llty)


def _cat(builder, a, b):
    n = a.type.count
    return builder.shuffle_vector(a, b, _idx(range(2 * n)))


# ---- loads: row a in the low half, row b in the high half -------------------------


@intrinsic
def load32x2(typingctx, ra, oa, rb, ob):
    """ra[oa:oa+32] | rb[ob:ob+32] as I8x64."""
    if not (_bytes(ra) and _bytes(rb)):
        return None

    def codegen(context, builder, sig, args):
        a = _load(builder, _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1]), _B32)
        b = _load(builder, _addr(context, builder, sig.args[2], args[2], sig.args[3], args[3]), _B32)
        return _cat(builder, a, b)

    return i8x64(ra, oa, rb, ob), codegen


@intrinsic
def nibbles32x2(typingctx, ra, oa, rb, ob):
    """16 packed bytes of each row -> 32 codes each (low nibbles, then high: ggml's order)."""
    if not (_bytes(ra) and _bytes(rb)):
        return None

    def codegen(context, builder, sig, args):
        a = _load(builder, _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1]), _B16)
        b = _load(builder, _addr(context, builder, sig.args[2], args[2], sig.args[3], args[3]), _B16)
        v = _cat(builder, a, b)  # <32 x i8>: a's bytes, b's bytes
        lo = builder.and_(v, _splat(_B32, 0x0F))
        hi = builder.lshr(v, _splat(_B32, 4))
        # a_lo (0..15), a_hi (32..47), b_lo (16..31), b_hi (48..63)
        return builder.shuffle_vector(lo, hi, _idx(list(range(16)) + list(range(32, 48)) + list(range(16, 32))
                                               + list(range(48, 64))))

    return i8x64(ra, oa, rb, ob), codegen


@intrinsic
def bcast32(typingctx, x, off):
    """x[off:off+32] in both halves (one activation block for two weight rows)."""
    if not _bytes(x):
        return None

    def codegen(context, builder, sig, args):
        v = _load(builder, _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1]), _B32)
        return _cat(builder, v, v)

    return i8x64(x, off), codegen


@intrinsic
def q5_high_bits2(typingctx, qa, qb):
    """Q5_0's two uint32 words of fifth bits -> I8x64 with 16 where a bit is set."""
    if not (isinstance(qa, types.Integer) and isinstance(qb, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        def bits(w):
            w = builder.trunc(w, _i32) if w.type.width > 32 else w
            return builder.bitcast(w, ir.VectorType(_i1, 32))

        v = _cat(builder, bits(args[0]), bits(args[1]))
        return builder.shl(builder.zext(v, _B64), _splat(_B64, 4))

    return i8x64(qa, qb), codegen


# ---- byte arithmetic -------------------------------------------------------------


def _byte_op(op):
    @intrinsic
    def fn(typingctx, v, c):
        if v != i8x64 or not isinstance(c, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            s = builder.trunc(args[1], _i8) if args[1].type.width > 8 else args[1]
            return getattr(builder, op)(args[0], _bcast(builder, _B64, s))

        return i8x64(v, c), codegen

    return fn


w_subc = _byte_op("sub")
w_xorc = _byte_op("xor")


@intrinsic
def w_or(typingctx, a, b):
    if a != i8x64 or b != i8x64:
        return None

    def codegen(context, builder, sig, args):
        return builder.or_(args[0], args[1])

    return i8x64(a, b), codegen


# ---- integer dot products ---------------------------------------------------------


def _dpbusd(builder, acc, u, s):
    return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _D16,
                 [acc, builder.bitcast(u, _D16), builder.bitcast(s, _D16)])


@intrinsic
def dpbusd(typingctx, acc, u, s):
    """acc + per int32 lane the sum of 4 products u (unsigned bytes) x s (signed bytes)."""
    if acc != i32x16 or u != i8x64 or s != i8x64:
        return None

    def codegen(context, builder, sig, args):
        return _dpbusd(builder, *args)

    return i32x16(acc, u, s), codegen


@intrinsic
def signed_dot_bias(typingctx, w):
    """-128 * (sum of each 4 signed weight bytes): the correction that turns
    dpbusd(bias, x ^ 0x80, w) into the signed dot x . w (x + 128 is x ^ 0x80)."""
    if w != i8x64:
        return None

    def codegen(context, builder, sig, args):
        s = _dpbusd(builder, _splat(_D16, 0), _splat(_B64, 0x80), args[0])
        return builder.sub(_splat(_D16, 0), s)

    return i32x16(w), codegen


@intrinsic
def izero16(typingctx):
    def codegen(context, builder, sig, args):
        return _splat(_D16, 0)

    return i32x16(), codegen


# ---- float accumulation -------------------------------------------------------------


@intrinsic
def fzero16(typingctx):
    def codegen(context, builder, sig, args):
        return _splat(_F16, 0.0)

    return f32x16(), codegen


@intrinsic
def halves_f32(typingctx, a, b):
    """F32x16 of float32 a in the low 8 lanes and b in the high 8."""
    if not (a == types.float32 and b == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return _halves(builder, _F16, args[0], args[1])

    return f32x16(a, b), codegen


@intrinsic
def fmul_s(typingctx, v, s):
    """v * s lane-wise, s a float32 scalar."""
    if v != f32x16:
        return None

    def codegen(context, builder, sig, args):
        c = context.cast(builder, args[1], sig.args[1], types.float32)
        return builder.fmul(args[0], _bcast(builder, _F16, c))

    return f32x16(v, s), codegen


@intrinsic
def fma16(typingctx, acc, scale, v):
    """acc + scale * float(v), lane-wise and fused (the AVX2 path's fma_acc, per half)."""
    if acc != f32x16 or scale != f32x16 or v != i32x16:
        return None

    def codegen(context, builder, sig, args):
        fv = builder.sitofp(args[2], _F16)
        return _call(builder, "llvm.fma.v16f32", _F16, [fv, args[1], args[0]])

    return f32x16(acc, scale, v), codegen


@intrinsic
def hsum2(typingctx, acc):
    """Each half's 8 lanes summed as the AVX2 path's hsum does:
    s_i = v_i + v_(i+4), then (s_0 + s_2) + (s_1 + s_3). Returns (row a, row b)."""
    if acc != f32x16:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        out = []
        for h in (0, 8):
            e = [builder.extract_element(v, ir.Constant(_i32, h + i)) for i in range(8)]
            s = [builder.fadd(e[i], e[i + 4]) for i in range(4)]
            out.append(builder.fadd(builder.fadd(s[0], s[2]), builder.fadd(s[1], s[3])))
        return context.make_tuple(builder, sig.return_type, out)

    return types.UniTuple(types.float32, 2)(acc), codegen
