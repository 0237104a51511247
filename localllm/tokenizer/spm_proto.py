"""Serialize a SentencePiece ModelProto without the protobuf package.

Only the few fields the encoder needs are written; field numbers come from
sentencepiece_model.proto (as shipped in sentencepiece's own _pb2 module).
"""

from __future__ import annotations

import struct

# SentencePiece.Type
SP_NORMAL, SP_UNKNOWN, SP_CONTROL, SP_USER_DEFINED, SP_UNUSED, SP_BYTE = 1, 2, 3, 4, 5, 6
MODEL_BPE = 2


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64   # protobuf encodes negative int32 as 10-byte two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _int_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


_F32 = struct.Struct("<f")
_SMALL = [bytes((i,)) for i in range(128)]  # one-byte varints, the common case


def _piece(text: str, score: float, kind: int) -> bytes:
    # Hot loop (262k pieces for Gemma): the generic helpers, inlined for short fields.
    t = text.encode("utf-8")
    n = len(t)
    body = b"\x0a" + (_SMALL[n] if n < 128 else _varint(n)) + t + b"\x15" + _F32.pack(score)
    if kind != SP_NORMAL:
        body += b"\x18" + _varint(kind)
    m = len(body)
    return b"\x0a" + (_SMALL[m] if m < 128 else _varint(m)) + body


def model_proto(pieces: list[tuple[str, float, int]], unk_id: int, byte_fallback: bool) -> bytes:
    """A BPE model with an identity normalizer: the caller escapes spaces itself."""
    trainer = (
        _int_field(3, MODEL_BPE)
        + _int_field(4, len(pieces))
        + _int_field(35, int(byte_fallback))
        + _int_field(40, unk_id)
        + _int_field(41, -1)       # bos/eos/pad ids: the tokenizer adds those itself
        + _int_field(42, -1)
        + _int_field(43, -1)
    )
    normalizer = (
        _len_field(1, b"identity")
        + _int_field(3, 0)         # add_dummy_prefix
        + _int_field(4, 0)         # remove_extra_whitespaces
        + _int_field(5, 0)         # escape_whitespaces
    )
    body = b"".join(_piece(*p) for p in pieces)
    return body + _len_field(2, trainer) + _len_field(3, normalizer)
