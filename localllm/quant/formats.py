"""GGUF tensor formats localllm can read: one entry per GGMLQuantizationType.

Block size and bytes per block always come from `gguf.GGML_QUANT_SIZES`; the
byte layout of one block is written next to each entry. "qs" are the packed
quants, "d"/"dmin" the f16 super-block scale and min. Element j of a 32-wide
4-bit block is the low nibble of qs[j] for j < 16, the high nibble of qs[j-16]
otherwise.
"""

from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from localllm.errors import GGUFError


class UnsupportedQuantType(GGUFError, ValueError):
    """Raised for a GGML tensor type localllm has no kernel for."""

    def __init__(self, qtype):
        name = getattr(qtype, "name", str(qtype))
        super().__init__(
            f"unsupported tensor type {name}; localllm reads "
            + ", ".join(t.name for t in SUPPORTED_TYPES)
        )
        self.qtype = qtype


@dataclass(frozen=True)
class QuantFormat:
    qtype: T
    code: int  # the integer the numba kernels switch on (= GGML type id)
    block_size: int  # elements per block
    type_size: int  # bytes per block
    fast: bool  # has an integer-dot matvec kernel (the rest dequantize per row)

    def row_bytes(self, k: int) -> int:
        if k % self.block_size:
            raise ValueError(f"row length {k} is not a multiple of {self.qtype.name} block size {self.block_size}")
        return k // self.block_size * self.type_size


def _fmt(qtype: T, fast: bool) -> QuantFormat:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return QuantFormat(qtype, int(qtype), block_size, type_size, fast)


FORMATS: dict[T, QuantFormat] = {
    # F32: 1 elem / 4 B, little-endian IEEE float
    T.F32: _fmt(T.F32, True),
    # F16: 1 elem / 2 B, IEEE half
    T.F16: _fmt(T.F16, True),
    # BF16: 1 elem / 2 B, top 16 bits of an f32
    T.BF16: _fmt(T.BF16, True),
    # Q4_0: 32 elems / 18 B: d f16, qs 16 B (4-bit, value = d * (q - 8))
    T.Q4_0: _fmt(T.Q4_0, True),
    # Q4_1: 32 elems / 20 B: d f16, m f16, qs 16 B (4-bit, value = d * q + m)
    T.Q4_1: _fmt(T.Q4_1, True),
    # Q5_0: 32 elems / 22 B: d f16, qh 4 B (bit j = 5th bit of elem j), qs 16 B; value = d * (q - 16)
    T.Q5_0: _fmt(T.Q5_0, True),
    # Q5_1: 32 elems / 24 B: d f16, m f16, qh 4 B, qs 16 B; value = d * q + m
    T.Q5_1: _fmt(T.Q5_1, False),
    # Q8_0: 32 elems / 34 B: d f16, qs 32 B int8; value = d * q
    T.Q8_0: _fmt(T.Q8_0, True),
    # Q2_K: 256 elems / 84 B: scales 16 B (lo nibble scale, hi nibble min, per 16 elems),
    #       qs 64 B (2-bit; per 128-half, byte l holds elems l, l+32, l+64, l+96 at shifts 0,2,4,6),
    #       d f16, dmin f16; value = d * sc * q - dmin * m
    T.Q2_K: _fmt(T.Q2_K, False),
    # Q3_K: 256 elems / 110 B: hmask 32 B (bit b of byte l = high bit of elem 32 b + l),
    #       qs 64 B (low 2 bits, Q2_K order), scales 12 B (16 x 6-bit, minus 32), d f16;
    #       value = d * sc * (q_lo - (hbit ? 0 : 4))
    T.Q3_K: _fmt(T.Q3_K, False),
    # Q4_K: 256 elems / 144 B: d f16, dmin f16, scales 12 B (8 x 6-bit scale + 8 x 6-bit min),
    #       qs 128 B (per 64 elems: 32 bytes, low nibbles first 32, high nibbles next 32);
    #       value = d * sc * q - dmin * m per 32-elem sub-block
    T.Q4_K: _fmt(T.Q4_K, True),
    # Q5_K: 256 elems / 176 B: d f16, dmin f16, scales 12 B (as Q4_K), qh 32 B (as Q3_K hmask),
    #       qs 128 B (as Q4_K); value = d * sc * q - dmin * m
    T.Q5_K: _fmt(T.Q5_K, True),
    # Q6_K: 256 elems / 210 B: ql 128 B (low 4 bits), qh 64 B (high 2 bits), scales 16 x int8
    #       (per 16 elems), d f16; per 128-half: elem 32 s + l takes ql nibble (s >= 2) of
    #       byte 64 h + 32 (s & 1) + l and qh bits 2 s of byte 32 h + l; value = d * sc * (q - 32)
    T.Q6_K: _fmt(T.Q6_K, True),
    # IQ4_NL: 32 elems / 18 B: d f16, qs 16 B (4-bit index into the non-linear KVALUES table)
    T.IQ4_NL: _fmt(T.IQ4_NL, False),
    # IQ4_XS: 256 elems / 136 B: d f16, scales_h u16 (2 bits per 32-block), scales_l 4 B
    #       (4 bits per 32-block), qs 128 B (16 B per 32-block, IQ4_NL order);
    #       value = d * (sc - 32) * KVALUES[q]
    T.IQ4_XS: _fmt(T.IQ4_XS, False),
}

SUPPORTED_TYPES: tuple[T, ...] = tuple(FORMATS)

# The IQ4_NL / IQ4_XS non-linear 4-bit code book (ggml's kvalues_iq4nl).
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)


def get_format(qtype) -> QuantFormat:
    """The format entry for `qtype`, or UnsupportedQuantType naming it."""
    try:
        return FORMATS[T(qtype)]
    except (KeyError, ValueError):
        raise UnsupportedQuantType(qtype) from None
