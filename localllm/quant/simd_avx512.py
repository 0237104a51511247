"""AVX-512 (F/BW/VL + VNNI) building blocks: two weight rows in one 512-bit register.

The AVX-512 kernels keep the AVX2 path's arithmetic exactly, only wider: the low
256 bits of every vector belong to weight row a and the high 256 bits to row b,
so each half is the 8-lane vector the AVX2 kernel would hold for that row.
vpdpbusd (VNNI) computes the same 8 int32 lanes per 32-block that vpmaddubsw +
vpmaddwd do, and the float steps are lane-wise, so both paths give equal bits.

Types seen by numba code: I8x64 (<64 x i8>), I16x32, I32x16 and F32x16.
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
_W32 = ir.VectorType(_i16, 32)
_W16 = ir.VectorType(_i16, 16)
_F16 = ir.VectorType(_f32, 16)


def _vtype(name, llty):
    cls = type(name + "Type", (types.Type,), {"__init__": lambda self: types.Type.__init__(self, name=name)})

    @register_model(cls)
    class _Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, llty)

    return cls()


i8x64 = _vtype("i8x64", _B64)
i16x32 = _vtype("i16x32", _W32)
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


def _load_pair(context, builder, sig, args, llty):
    """ra[oa:] | rb[ob:], llty's width each, for an intrinsic taking (ra, oa, rb, ob)."""
    a = _load(builder, _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1]), llty)
    b = _load(builder, _addr(context, builder, sig.args[2], args[2], sig.args[3], args[3]), llty)
    return _cat(builder, a, b)


@intrinsic
def load32x2(typingctx, ra, oa, rb, ob):
    """ra[oa:oa+32] | rb[ob:ob+32] as I8x64."""
    if not (_bytes(ra) and _bytes(rb)):
        return None

    def codegen(context, builder, sig, args):
        return _load_pair(context, builder, sig, args, _B32)

    return i8x64(ra, oa, rb, ob), codegen


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


w_andc = _byte_op("and_")
w_shrc = _byte_op("lshr")  # per byte, bits shifted out are lost (LLVM masks the word shift)
w_shlc = _byte_op("shl")


@intrinsic
def w_or(typingctx, a, b):
    if a != i8x64 or b != i8x64:
        return None

    def codegen(context, builder, sig, args):
        return builder.or_(args[0], args[1])

    return i8x64(a, b), codegen


@intrinsic
def scales16x2(typingctx, ra, oa, rb, ob):
    """16 int8 scales at ra[oa:] and 16 at rb[ob:], sign-extended: I16x32 (a's, then b's)."""
    if not (_bytes(ra) and _bytes(rb)):
        return None

    def codegen(context, builder, sig, args):
        return builder.sext(_load_pair(context, builder, sig, args, _B16), _W32)

    return i16x32(ra, oa, rb, ob), codegen


@intrinsic
def scale_pairs(typingctx, sc, j):
    """The word scales of 32-element group j, for rows_madd: words 0-7 sc[2j], 8-15 sc[2j+1]
    (row a's), 16-23 sc[16+2j], 24-31 sc[17+2j] (row b's). sc: scales16x2's vector."""
    if sc != i16x32 or not isinstance(j, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        jj = context.cast(builder, args[1], sig.args[1], types.int16)
        base = ir.Constant(_W32, [0] * 8 + [1] * 8 + [16] * 8 + [17] * 8)
        idx = builder.add(base, _bcast(builder, _W32, builder.add(jj, jj)))
        return _call(builder, "llvm.x86.avx512.permvar.hi.512", _W32, [args[0], idx])

    return i16x32(sc, j), codegen


# ---- integer dot products ---------------------------------------------------------


def _dpbusd(builder, acc, u, s):
    return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _D16,
                 [acc, builder.bitcast(u, _D16), builder.bitcast(s, _D16)])


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


@intrinsic
def load16(typingctx, arr, idx):
    """Elements idx .. idx+15 of a 1-D float32 (int32) array as F32x16 (I32x16)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype in (types.float32, types.int32)):
        return None
    vty, llty = (f32x16, _F16) if arr.dtype == types.float32 else (i32x16, _D16)

    def codegen(context, builder, sig, args):
        return _load(builder, _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1]), llty)

    return vty(arr, idx), codegen


def _hsum_tree(builder, vecs):
    """Sixteen I32x16 whose halves each hold 8 lanes to sum -> (A, B): lane i of A is the
    sum of vecs[i]'s low half, of B its high half. Integer sums, so the tree's order is
    free: three levels halve the lanes per group while merging vector pairs."""
    level = [(v, [(i, 0), (i, 1)]) for i, v in enumerate(vecs)]  # (vector, label per group)
    size = 8
    while size > 1:
        half, nxt = size // 2, []
        for (a, la), (b, lb) in zip(level[0::2], level[1::2]):
            lo = [q * size + j for q in range(len(la)) for j in range(half)]
            lo += [16 + q * size + j for q in range(len(lb)) for j in range(half)]
            hi = [i + half for i in lo]
            s = builder.add(builder.shuffle_vector(a, b, _idx(lo)), builder.shuffle_vector(a, b, _idx(hi)))
            nxt.append((s, la + lb))
        level, size = nxt, half
    (f0, l0), (f1, l1) = level
    pos = {lab: i for i, lab in enumerate(l0)} | {lab: 16 + i for i, lab in enumerate(l1)}
    return [builder.shuffle_vector(f0, f1, _idx([pos[(i, h)] for i in range(16)])) for h in (0, 1)]


# ---- whole groups of activation rows in one intrinsic (blocks_avx512's wide steps) ----
# A group's rows get identical code, so these emit it in a Python loop: numba types one
# call per group instead of one inlined copy per row.

_NW = 16  # rows per group (blocks_avx512.ROWS)


def _intp(context, builder, ty, v):
    return context.cast(builder, v, ty, types.intp)


def _elem(context, builder, arrty, arr, idx, llty):
    """Pointer to element idx (an intp value) of a 1-D array, as llty*."""
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(ary.data, [idx]), llty.as_pointer())


def _load_at(context, builder, arrty, arr, k, i, llty):
    """Element k + i of a 1-D array (k an intp value, i a constant)."""
    return builder.load(_elem(context, builder, arrty, arr, builder.add(k, ir.Constant(k.type, i)), llty))


def _row_off(builder, k, i, per):
    return builder.mul(builder.add(k, ir.Constant(k.type, i)), ir.Constant(k.type, per))


def _scaled_fma(builder, acc, lanes, dw, d):
    """fma16(acc, fmul_s(dw, d), lanes): acc + (dw * d) * float(lanes), fused."""
    scale = builder.fmul(dw, _bcast(builder, _F16, d))
    return _call(builder, "llvm.fma.v16f32", _F16, [builder.sitofp(lanes, _F16), scale, acc])


def _is_vec_tuple(t, vty, n=_NW):
    return isinstance(t, types.UniTuple) and t.count == n and t.dtype == vty


def _f32_array(t):
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float32


def _madd(builder, acc, u, s, ps, sc):
    """acc + per int32 lane sc * (the 4 products u (unsigned bytes) x s (signed bytes), less
    ps): vpmaddubsw sums the byte pairs, ps (I16x32 or None) comes off each pair sum and
    vpdpwssd weights the pairs by their word scales sc. Exact while pair sums fit int16."""
    p = _call(builder, "llvm.x86.avx512.pmaddubs.w.512", _W32, [u, s])
    if ps is not None:
        p = builder.sub(p, ps)
    return _call(builder, "llvm.x86.avx512.vpdpwssd.512", _D16,
                 [acc, builder.bitcast(p, _D16), builder.bitcast(sc, _D16)])


def _bcast_row(context, builder, arrty, arr, k, i, per, llty):
    v = builder.load(_elem(context, builder, arrty, arr, _row_off(builder, k, i, per), llty), align=1)
    return _cat(builder, v, v)


@intrinsic
def rows_madd(typingctx, isum, w, sc, xk, xp, k):
    """Sixteen rows' Q6_K group: isum[i] = madd_scaled(isum[i], w, x, ps, sc) with row
    i's codes x and pair sums ps at scratch index k + i (32 bytes, 16 int16 each)."""
    if not (_is_vec_tuple(isum, i32x16) and w == i8x64 and sc == i16x32 and _bytes(xk)
            and isinstance(xp, types.Array) and xp.dtype == types.int16 and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        isum_v, w_v, sc_v, xk_v, xp_v, k_v = args
        k_v = _intp(context, builder, sig.args[5], k_v)
        out = []
        for i in range(_NW):
            x = _bcast_row(context, builder, sig.args[3], xk_v, k_v, i, 32, _B32)
            ps = _bcast_row(context, builder, sig.args[4], xp_v, k_v, i, 16, _W16)
            out.append(_madd(builder, builder.extract_value(isum_v, i), w_v, x, ps, sc_v))
        return context.make_tuple(builder, sig.return_type, out)

    return isum(isum, w, sc, xk, xp, k), codegen


@intrinsic
def rows_scale(typingctx, st, isum, dw, ds, k):
    """Sixteen rows' K-quant float step: st[i] = fma16(st[i], fmul_s(dw, ds[k + i]), isum[i])."""
    if not (_is_vec_tuple(st, f32x16) and _is_vec_tuple(isum, i32x16) and dw == f32x16 and _f32_array(ds)
            and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        st_v, isum_v, dw_v, ds_v, k_v = args
        k_v = _intp(context, builder, sig.args[4], k_v)
        out = []
        for i in range(_NW):
            d = _load_at(context, builder, sig.args[3], ds_v, k_v, i, _f32)
            out.append(_scaled_fma(builder, builder.extract_value(st_v, i), builder.extract_value(isum_v, i), dw_v, d))
        return context.make_tuple(builder, sig.return_type, out)

    return st(st, isum, dw, ds, k), codegen


