"""Sixteen weight rows side by side: the lane of a vector is a weight row (output feature).

The row-lane arithmetic (row_lanes.py) needs, per 32-element block, one exact integer
dot product per (weight row, activation row) and one float step per output element.
Here lane i of every vector belongs to weight row r + i of a 16-row group, so one
vpdpbusd multiplies 4 codes of each of 16 rows by the same 4 activation codes
(broadcast): 64 products per instruction, and the float step runs once per block for
16 outputs at once.

The weights stay in their GGUF layout (zero copy): a group's block is 16 separate
16-byte loads of its codes, transposed in registers so that vector j holds dword j of
every row, and 16 more of its first bytes (scale, Q5_0's fifth bits) transposed the
same way. Formats: Q4_0 (codes 0..15, offset 8), Q4_1 (codes 0..15 and a min),
Q5_0 (codes 0..31, offset 16), Q8_0 (signed codes; see Q8_0_OFFSET), and Q4_K in
64-element parts (scales and mins per 32 as integer lanes).
On the avx2 path the same 16-lane vectors are split by LLVM into two 256-bit halves
and the dot products use vpmaddubsw + vpmaddwd; integers are exact either way, so
both paths give the same bits.

Types: i8x64 (<64 x i8>), i32x16 and f32x16 from simd_avx512 (defining a type runs no
AVX-512 code; only the intrinsics' instructions do).
"""

import localllm._numba_setup  # noqa: F401

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from localllm.isa import KERNEL_PATH
from localllm.quant.simd_avx512 import _B16, _B32, _B64, _D8, _D16, _F16, _W16, _W32, _cat, _i32, _idx, _load
from localllm.quant.simd_avx512 import f32x16, i8x64, i32x16
from localllm.quant.simd_x86 import _addr, _bcast, _call, _splat

_VNNI = KERNEL_PATH == "avx512"

GROUP = 16  # weight rows per group (lanes per vector)


def _intp(context, builder, ty, v):
    return context.cast(builder, v, ty, types.intp)


def _row_ptrs(context, builder, arrty, arr, r, off):
    """Byte pointers to offset `off` of rows r .. r+15 of the 2-D C-contiguous byte array;
    rows past the end repeat the last row (their lanes are never stored)."""
    ary = context.make_array(arrty)(context, builder, arr)
    n = cgutils.unpack_tuple(builder, ary.shape)[0]
    stride = cgutils.unpack_tuple(builder, ary.strides)[0]
    last = builder.sub(n, ir.Constant(n.type, 1))
    ptrs = []
    for i in range(GROUP):
        row = builder.add(r, ir.Constant(r.type, i))
        row = builder.select(builder.icmp_signed("<", row, n), row, last)
        ptrs.append(builder.gep(ary.data, [builder.add(builder.mul(row, stride), off)]))
    return ptrs


def _transpose16(builder, rows):
    """16 x <16 x i8> (one per row) -> 4 x <16 x i32>: vector j, lane i = dword j of row i.

    Z_q = rows q, 4+q, 8+q, 12+q in its four 128-bit lanes; a 4x4 dword transpose within
    each 128-bit lane then puts row 4L+q's dword j at lane 4L+q of vector j."""
    z = []
    for q in range(4):
        lo = _cat(builder, rows[q], rows[4 + q])
        hi = _cat(builder, rows[8 + q], rows[12 + q])
        z.append(builder.bitcast(_cat(builder, lo, hi), _D16))

    def unpack(a, b, k):  # per 128-bit lane: dwords k, k+1 of a and b interleaved
        return builder.shuffle_vector(a, b, _idx([v for L in range(4) for v in
                                                  (4 * L + k, 16 + 4 * L + k, 4 * L + k + 1, 16 + 4 * L + k + 1)]))

    def unpack64(a, b, k):  # per 128-bit lane: qword k of a, then qword k of b
        return builder.shuffle_vector(a, b, _idx([v for L in range(4) for v in
                                                  (4 * L + 2 * k, 4 * L + 2 * k + 1, 16 + 4 * L + 2 * k, 16 + 4 * L + 2 * k + 1)]))

    a0, a1 = unpack(z[0], z[1], 0), unpack(z[0], z[1], 2)
    a2, a3 = unpack(z[2], z[3], 0), unpack(z[2], z[3], 2)
    return [unpack64(a0, a2, 0), unpack64(a0, a2, 1), unpack64(a1, a3, 0), unpack64(a1, a3, 1)]


def _head_dwords(builder, ptrs):
    """Dwords 0 and 1 of the 16 rows at ptrs (one block's first bytes), transposed: two
    <16 x i32>, lane i from row i. Sixteen 16-byte loads and an in-register transpose:
    a vpgatherdd of these dwords was measured 2.5x slower per Q5_0 block (its elements
    often straddle cache lines at 22-byte strides)."""
    return _transpose16(builder, _loads(builder, ptrs, 0))[:2]


def _f16_low(builder, dwords):
    """The f16 in the low half of each dword lane -> f32x16 (vcvtph2ps)."""
    h = builder.trunc(dwords, _W16)
    return builder.fpext(builder.bitcast(h, ir.VectorType(ir.HalfType(), GROUP)), _F16)


def _nibbles(builder, t):
    """A transposed dword vector of packed nibbles -> (low nibbles, high nibbles) as <64 x i8>."""
    lo = builder.and_(builder.bitcast(t, _B64), _splat(_B64, 0x0F))
    shifted = builder.bitcast(builder.lshr(builder.bitcast(t, _W32), _splat(_W32, 4)), _B64)
    return lo, builder.and_(shifted, _splat(_B64, 0x0F))


def _fifth_bits(builder, qh, first):
    """Bits first .. first+3 of each lane's qh (<16 x i32>) as 0x10 or 0 in that lane's
    bytes 0..3: the fifth bits of four codes. One in-lane byte shuffle brings the byte
    holding them to all four bytes, a per-byte mask picks each one's bit."""
    qb = builder.bitcast(qh, _B64)
    src = first // 8
    picked = builder.shuffle_vector(qb, qb, _idx([4 * i + src for i in range(GROUP) for _ in range(4)]))
    bits = ir.Constant(_B64, [1 << (first % 8 + k) for _ in range(GROUP) for k in range(4)])
    hit = builder.icmp_unsigned("!=", builder.and_(picked, bits), _splat(_B64, 0))
    return builder.select(hit, _splat(_B64, 0x10), _splat(_B64, 0))


# A 32-block of 16 rows: 8 code vectors (lane i: four codes of row r + i), then the scales
# (and for Q4_1 the mins).
_GROUP32 = types.Tuple([i8x64] * 8 + [f32x16])
_GROUP32_MIN = types.Tuple([i8x64] * 8 + [f32x16, f32x16])


def _group_intrinsic(block_bytes, decode, doc, ret=_GROUP32, parts=1):
    """The intrinsic group(raw, r, u) of a format of block_bytes bytes per block, each block
    read in `parts` units: unit u of rows r .. r+15 of raw (N, row_bytes) uint8 as a `ret`
    tuple. decode(builder, ptrs, part) turns the 16 rows' block pointers and the unit's
    part of its block (an IR integer; 0 when parts is 1) into the code vectors and the
    per-row numbers."""

    @intrinsic
    def group(typingctx, raw, r, u):
        if not (isinstance(raw, types.Array) and raw.ndim == 2 and raw.dtype == types.uint8):
            return None

        def codegen(context, builder, sig, args):
            r = _intp(context, builder, sig.args[1], args[1])
            u = _intp(context, builder, sig.args[2], args[2])
            block, part = u, ir.Constant(u.type, 0)
            if parts > 1:
                block = builder.sdiv(u, ir.Constant(u.type, parts))
                part = builder.srem(u, ir.Constant(u.type, parts))
            off = builder.mul(block, ir.Constant(r.type, block_bytes))
            ptrs = _row_ptrs(context, builder, sig.args[0], args[0], r, off)
            return context.make_tuple(builder, sig.return_type, decode(builder, ptrs, part))

        return ret(raw, r, u), codegen

    group.__doc__ = doc
    return group


def _loads(builder, ptrs, at):
    """The 16 bytes at byte `at` (an int, or an IR integer) of each row's block, <16 x i8> each."""
    at = ir.Constant(_i32, at) if isinstance(at, int) else at
    return [_load(builder, builder.gep(p, [at]), _B16) for p in ptrs]


def _nibble_codes(builder, ptrs, at):
    """The 8 code vectors of 16 nibble bytes at byte `at` of each row's block: the low
    nibbles (codes 0..15 of the block) in vectors 0-3, the high ones (16..31) in 4-7."""
    lo, hi = [], []
    for t in _transpose16(builder, _loads(builder, ptrs, at)):
        a, b = _nibbles(builder, t)
        lo.append(a)
        hi.append(b)
    return lo + hi


def _q4_0_decode(builder, ptrs, part):  # d f16 | 16 B nibbles
    return _nibble_codes(builder, ptrs, 2) + [_f16_low(builder, _head_dwords(builder, ptrs)[0])]


q4_0_group = _group_intrinsic(18, _q4_0_decode, """Block b of rows r .. r+15 of a Q4_0 matrix:
    (lo_0..lo_3, hi_0..hi_3, scales). lo_j lane i holds row i's codes 4j..4j+3 (0..15, the
    stored nibbles; the -8 comes off in the float step), hi_j its codes 16+4j..16+4j+3.""")


def _x_dword(builder, xptr, k):
    """Activation bytes k .. k+3 broadcast to every dword lane (<64 x i8>)."""
    d = _load(builder, builder.gep(xptr, [ir.Constant(_i32, k)]), _i32)
    return builder.bitcast(_bcast(builder, _D16, d), _B64)


def _dot_groups(builder, codes, xs, top, signed):
    """Sum over pairs of (unsigned codes <64 x i8>, signed broadcast activations): per dword
    lane the sum of all their 4-byte products, <16 x i32>. top: the codes' largest value.
    A vpmaddubsw word is at most 2 * top * 127, so the avx2 path adds as many of them in
    16 bits as stay below 2**15 before widening (eight for 4-bit codes, four for 5-bit).
    signed: the codes are signed bytes (Q8_0 on avx2; top is then their largest
    magnitude), multiplied by the sign trick: |w| times x with w's sign."""
    if _VNNI:  # two chains (codes 0-15 and 16-31) halve the latency of one block's dot
        accs = [ir.Constant(_D16, None), ir.Constant(_D16, None)]
        for k, (u, s) in enumerate(zip(codes, xs)):
            accs[k % 2] = _call(builder, "llvm.x86.avx512.vpdpbusd.512", _D16,
                                [accs[k % 2], builder.bitcast(u, _D16), builder.bitcast(s, _D16)])
        return builder.add(accs[0], accs[1])
    per_widen = (2 ** 15 - 1) // (2 * top * 127)
    halves = []
    for h in range(2):
        pick = _idx(range(32 * h, 32 * h + 32))
        dwords, words = None, None
        for k, (u, s) in enumerate(zip(codes, xs)):
            uh = builder.shuffle_vector(u, u, pick)
            sh = builder.shuffle_vector(s, s, pick)
            if signed:  # |w| times x with w's sign: the same products
                sh = _call(builder, "llvm.x86.avx2.psign.b", _B32, [sh, uh])
                uh = _call(builder, "llvm.abs.v32i8", _B32, [uh, ir.Constant(ir.IntType(1), 0)])
            p = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _W16, [uh, sh])
            words = p if words is None else builder.add(words, p)
            if (k + 1) % per_widen == 0 or k + 1 == len(codes):
                wide = _call(builder, "llvm.x86.avx2.pmadd.wd", _D8, [words, _splat(_W16, 1)])
                dwords = wide if dwords is None else builder.add(dwords, wide)
                words = None
        halves.append(dwords)
    return _cat(builder, halves[0], halves[1])


def _block_dot(top, doc, signed=False):
    """The intrinsic dot(w, x, off) of a format whose codes run 0..top (signed: -top..top):
    per lane (weight row) the integer dot of a group's codes with x[off : off+32]
    (1-D int8)."""

    @intrinsic
    def dot(typingctx, w, x, off):
        if w not in (_GROUP32, _GROUP32_MIN) or not (isinstance(x, types.Array) and x.ndim == 1 and x.dtype == types.int8):
            return None

        def codegen(context, builder, sig, args):
            xp = _addr(context, builder, sig.args[1], args[1], sig.args[2], args[2])
            codes = [builder.extract_value(args[0], j) for j in range(8)]
            xs = [_x_dword(builder, xp, 4 * j) for j in range(8)]
            return _dot_groups(builder, codes, xs, top, signed)

        return i32x16(w, x, off), codegen

    dot.__doc__ = doc
    return dot


q4_0_dot = _block_dot(15, "Q4_0's (and Q4_1's) 16 integer dots of a q4_0_group with x[off : off+32].")


def _q4_1_decode(builder, ptrs, part):  # d f16 | m f16 | 16 B nibbles
    h0 = _head_dwords(builder, ptrs)[0]
    return _nibble_codes(builder, ptrs, 4) + [_f16_low(builder, h0), _f16_low(builder, builder.lshr(h0, _splat(_D16, 16)))]


q4_1_group = _group_intrinsic(20, _q4_1_decode, """Block b of rows r .. r+15 of a Q4_1 matrix:
    (lo_0..lo_3, hi_0..hi_3, scales, mins), the codes as q4_0_group gives them (0..15, no
    offset: an element is d * code + m).""", _GROUP32_MIN)


def _q5_0_decode(builder, ptrs, part):  # d f16 | qh u32 | 16 B nibbles
    h0, h1 = _head_dwords(builder, ptrs)  # bytes 0-3: d, qh low half; 4-7: qh high half, codes
    qh = builder.or_(builder.lshr(h0, _splat(_D16, 16)), builder.shl(h1, _splat(_D16, 16)))
    lo, hi = [], []
    for j, t in enumerate(_transpose16(builder, _loads(builder, ptrs, 6))):
        a, b = _nibbles(builder, t)
        lo.append(builder.or_(a, _fifth_bits(builder, qh, 4 * j)))
        hi.append(builder.or_(b, _fifth_bits(builder, qh, 16 + 4 * j)))
    return lo + hi + [_f16_low(builder, h0)]


q5_0_group = _group_intrinsic(22, _q5_0_decode, """Block b of rows r .. r+15 of a Q5_0 matrix, as
    q4_0_group gives Q4_0's (codes 0..31, the -16 comes off in the float step).""")


q5_0_dot = _block_dot(31, "Q5_0's 16 integer dots of a q5_0_group with x[off : off+32].")


# Q8_0's codes are signed. vpdpbusd takes them as w + 128 (w ^ 0x80, unsigned) and the
# float step takes 128 * (activation code sum) off; avx2 multiplies the signed codes
# directly (sign trick), with no offset. The integers are the same.
Q8_0_OFFSET = 128 if _VNNI else 0


def _q8_0_decode(builder, ptrs, part):  # d f16 | 32 x int8
    codes = []
    for at in (2, 18):
        codes += [builder.bitcast(t, _B64) for t in _transpose16(builder, _loads(builder, ptrs, at))]
    if Q8_0_OFFSET:
        codes = [builder.xor(c, _splat(_B64, 0x80)) for c in codes]
    return codes + [_f16_low(builder, _head_dwords(builder, ptrs)[0])]


q8_0_group = _group_intrinsic(34, _q8_0_decode, """Block b of rows r .. r+15 of a Q8_0 matrix: 8 code
    vectors (lane i: row i's codes 4j..4j+3 in vector j; as w + Q8_0_OFFSET), then the scales.""")


q8_0_dot = _block_dot(255 if _VNNI else 128, "Q8_0's 16 integer dots of a q8_0_group with x[off : off+32].",
                      signed=not _VNNI)


# Q4_K: 256-element super-blocks, d f16 | dmin f16 | 12 B of 6-bit scales and mins |
# 128 B nibbles; bytes 32p .. 32p+31 of the nibbles hold sub-block 2p (low nibbles) and
# 2p+1 (high). Its unit here is one 64-element part p: an element is
# d * sc_j * code - dmin * m_j, j its sub-block.
_GROUP_Q4_K = types.Tuple([i8x64] * 16 + [i32x16] * 4 + [f32x16] * 2)


def _k4_scale_mins(builder, head, p):
    """Sub-blocks 2p, 2p+1's scales and mins (0..63) per lane, as <16 x i32>, from the
    transposed head dwords (d|dmin, scale bytes 0-3, 4-7, 8-11) and the runtime part p:
    j < 4 take the low 6 bits of bytes j and j+4; j >= 4 a nibble of byte j+4 and the top
    two bits of bytes j-4 and j."""
    _, b0, b1, b2 = head
    upper = builder.icmp_signed(">=", p, ir.Constant(p.type, 2))
    out = []
    for k in range(2):
        q = builder.and_(builder.add(builder.mul(p, ir.Constant(p.type, 2)), ir.Constant(p.type, k)), ir.Constant(p.type, 3))
        sh = _bcast(builder, _D16, builder.trunc(builder.mul(q, ir.Constant(p.type, 8)), _i32))
        t0, t1, t2 = (builder.lshr(b, sh) for b in (b0, b1, b2))
        top0 = builder.and_(builder.lshr(t0, _splat(_D16, 2)), _splat(_D16, 0x30))
        top1 = builder.and_(builder.lshr(t1, _splat(_D16, 2)), _splat(_D16, 0x30))
        hi_sc = builder.or_(builder.and_(t2, _splat(_D16, 0xF)), top0)
        hi_m = builder.or_(builder.and_(builder.lshr(t2, _splat(_D16, 4)), _splat(_D16, 0xF)), top1)
        out.append((builder.select(upper, hi_sc, builder.and_(t0, _splat(_D16, 63))),
                    builder.select(upper, hi_m, builder.and_(t1, _splat(_D16, 63)))))
    (sc0, m0), (sc1, m1) = out
    return [sc0, sc1, m0, m1]


def _q4_k_decode(builder, ptrs, p):
    head = _transpose16(builder, _loads(builder, ptrs, 0))
    at = builder.add(builder.mul(p, ir.Constant(p.type, 32)), ir.Constant(p.type, 16))
    a = _nibble_codes(builder, ptrs, at)  # bytes 0-15 of the part: codes 0-15 of both sub-blocks
    b = _nibble_codes(builder, ptrs, builder.add(at, ir.Constant(at.type, 16)))  # 16-31
    d = _f16_low(builder, head[0])
    neg_dmin = builder.fneg(_f16_low(builder, builder.lshr(head[0], _splat(_D16, 16))))
    return a[:4] + b[:4] + a[4:] + b[4:] + _k4_scale_mins(builder, head, p) + [d, neg_dmin]


q4_k_group = _group_intrinsic(144, _q4_k_decode, """64-element part u (super-block u // 4,
    part u % 4) of rows r .. r+15 of a Q4_K matrix: 16 code vectors (0-7: sub-block 2p as
    q4_0_group's lo+hi order gives a 32-block, 8-15: sub-block 2p+1), the two sub-blocks'
    scales and mins (int32), then d and -dmin (negated, so that the min's float step is a
    plain fma).""", _GROUP_Q4_K, parts=4)


@intrinsic
def q4_k_dot(typingctx, w, x, off):
    """Per lane sc_2p * dot(sub-block 2p) + sc_2p+1 * dot(sub-block 2p+1) of a q4_k_group
    with x[off : off+64]: the part's exact integer."""
    if w != _GROUP_Q4_K or not (isinstance(x, types.Array) and x.ndim == 1 and x.dtype == types.int8):
        return None

    def codegen(context, builder, sig, args):
        xp = _addr(context, builder, sig.args[1], args[1], sig.args[2], args[2])
        codes = [builder.extract_value(args[0], j) for j in range(16)]
        sc0, sc1 = builder.extract_value(args[0], 16), builder.extract_value(args[0], 17)
        d0 = _dot_groups(builder, codes[:8], [_x_dword(builder, xp, 4 * j) for j in range(8)], 15, False)
        d1 = _dot_groups(builder, codes[8:], [_x_dword(builder, xp, 32 + 4 * j) for j in range(8)], 15, False)
        return builder.add(builder.mul(sc0, d0), builder.mul(sc1, d1))

    return i32x16(w, x, off), codegen


@intrinsic
def q4_k_mins(typingctx, w, s0, s1):
    """Per lane m_2p * s0 + m_2p+1 * s1 of a q4_k_group: its min term, exact (s0, s1 the
    activation sub-blocks' code sums)."""
    if w != _GROUP_Q4_K:
        return None

    def codegen(context, builder, sig, args):
        m0, m1 = builder.extract_value(args[0], 18), builder.extract_value(args[0], 19)
        a = _bcast(builder, _D16, context.cast(builder, args[1], sig.args[1], types.int32))
        b = _bcast(builder, _D16, context.cast(builder, args[2], sig.args[2], types.int32))
        return builder.add(builder.mul(m0, a), builder.mul(m1, b))

    return i32x16(w, s0, s1), codegen


@intrinsic
def row_step(typingctx, acc, isum, bias, dw, dx):
    """acc + (dw * dx) * float(isum - bias), lane-wise: one block's float step for 16
    outputs. bias: an integer (the codes' offset times the activation block's code sum),
    dx: the activation block's scale."""
    if acc != f32x16 or isum != i32x16 or dw != f32x16:
        return None

    def codegen(context, builder, sig, args):
        bias = context.cast(builder, args[2], sig.args[2], types.int32)
        dx = context.cast(builder, args[4], sig.args[4], types.float32)
        f = builder.sitofp(builder.sub(args[1], _bcast(builder, _D16, bias)), _F16)
        s = builder.fmul(args[3], _bcast(builder, _F16, dx))
        return _call(builder, "llvm.fma.v16f32", _F16, [s, f, args[0]])

    return f32x16(acc, isum, bias, dw, dx), codegen


@intrinsic
def row_fma(typingctx, acc, a, b):
    """acc + a * b, lane-wise, b a scalar (Q4_1's min step: the mins times d_x * sum x)."""
    if acc != f32x16 or a != f32x16:
        return None

    def codegen(context, builder, sig, args):
        b = context.cast(builder, args[2], sig.args[2], types.float32)
        return _call(builder, "llvm.fma.v16f32", _F16, [args[1], _bcast(builder, _F16, b), args[0]])

    return f32x16(acc, a, b), codegen


@intrinsic
def fzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_F16, None)

    return f32x16(), codegen


@intrinsic
def fload(typingctx, arr, i):
    """arr[i : i+16] of a 1-D float32 array as f32x16."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return _load(builder, _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1]), _F16)

    return f32x16(arr, i), codegen


@intrinsic
def fstore(typingctx, arr, i, v):
    """arr[i : i+16] = v (1-D float32 array)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.float32) or v != f32x16:
        return None

    def codegen(context, builder, sig, args):
        p = _addr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        builder.store(args[2], builder.bitcast(p, _F16.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def store_lanes(typingctx, out, m, r, v):
    """out[m, r : r+16] = v for the columns that exist (out (M, N) float32, C order)."""
    if not (isinstance(out, types.Array) and out.ndim == 2 and out.dtype == types.float32) or v != f32x16:
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        n = cgutils.unpack_tuple(builder, ary.shape)[1]
        mm = _intp(context, builder, sig.args[1], args[1])
        r = _intp(context, builder, sig.args[2], args[2])
        p = builder.gep(ary.data, [builder.add(builder.mul(mm, n), r)])
        lanes = builder.add(_bcast(builder, ir.VectorType(r.type, GROUP), r), ir.Constant(ir.VectorType(r.type, GROUP), list(range(GROUP))))
        mask = builder.icmp_signed("<", lanes, _bcast(builder, ir.VectorType(n.type, GROUP), n))
        fnty = ir.FunctionType(ir.VoidType(), [_F16, _F16.as_pointer(), _i32, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v16f32.p0v16f32")
        builder.call(fn, [args[3], builder.bitcast(p, _F16.as_pointer()), ir.Constant(_i32, 4), mask])
        return context.get_dummy_value()

    return types.none(out, m, r, v), codegen
