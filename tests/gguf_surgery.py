"""Byte-level edits of a GGUF file, for building corrupt files in tests.

`layout` walks the header with plain struct reads (independent of localllm's
parser) and records where every field lies; the edit helpers patch fields in
place or splice the header and re-pad it, so that tensor data stays where the
table says it is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gguf import GGUFValueType as V

_SCALAR = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
           V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d"}


@dataclass
class KV:
    key: str
    start: int  # the key's length field
    type_pos: int
    value_pos: int
    end: int
    vtype: int


@dataclass
class Tensor:
    name: str
    start: int  # the name's length field
    dims_pos: int
    type_pos: int
    offset_pos: int
    dims: tuple[int, ...]
    qtype: int
    offset: int


@dataclass
class Layout:
    kvs: list[KV] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    table_end: int = 0
    data_start: int = 0
    alignment: int = 32

    def kv(self, key: str) -> KV:
        return next(k for k in self.kvs if k.key == key)

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)


def _skip_value(data: bytes, pos: int, vtype: int) -> int:
    if vtype == V.STRING:
        (n,) = struct.unpack_from("<Q", data, pos)
        return pos + 8 + n
    if vtype == V.ARRAY:
        etype, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if etype in _SCALAR:
            return pos + count * struct.calcsize(_SCALAR[V(etype)])
        for _ in range(count):
            pos = _skip_value(data, pos, etype)
        return pos
    return pos + struct.calcsize(_SCALAR[V(vtype)])


def layout(data: bytes) -> Layout:
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    out = Layout()
    pos = 24
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8:pos + 8 + n].decode()
        type_pos = pos + 8 + n
        (vtype,) = struct.unpack_from("<I", data, type_pos)
        end = _skip_value(data, type_pos + 4, vtype)
        out.kvs.append(KV(key, pos, type_pos, type_pos + 4, end, vtype))
        if key == "general.alignment":
            (out.alignment,) = struct.unpack_from("<I", data, type_pos + 4)
        pos = end
    for _ in range(n_tensors):
        (n,) = struct.unpack_from("<Q", data, pos)
        name = data[pos + 8:pos + 8 + n].decode()
        (n_dims,) = struct.unpack_from("<I", data, pos + 8 + n)
        dims_pos = pos + 12 + n
        dims = struct.unpack_from(f"<{n_dims}Q", data, dims_pos)
        type_pos = dims_pos + 8 * n_dims
        qtype, offset = struct.unpack_from("<IQ", data, type_pos)
        out.tensors.append(Tensor(name, pos, dims_pos, type_pos, type_pos + 4, dims, qtype, offset))
        pos = type_pos + 12
    out.table_end = pos
    out.data_start = -(-pos // out.alignment) * out.alignment
    return out


def patch(data: bytes, pos: int, fmt: str, *values) -> bytes:
    """data with struct-packed values written at pos (same length)."""
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, *values)
    return bytes(out)


def splice_header(data: bytes, start: int, end: int, new: bytes, kv_delta: int = 0) -> bytes:
    """Replace header bytes [start, end) with new, re-pad so the tensor data keeps
    its alignment, and adjust the metadata count by kv_delta."""
    lay = layout(data)
    assert end <= lay.table_end
    header = bytearray(data[:start] + new + data[end:lay.table_end])
    (n_kv,) = struct.unpack_from("<Q", header, 16)
    struct.pack_into("<Q", header, 16, n_kv + kv_delta)
    pad = -len(header) % lay.alignment
    return bytes(header) + b"\0" * pad + data[lay.data_start:]


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def set_value(data: bytes, key: str, vtype: int, payload: bytes) -> bytes:
    """Give key a new type and encoded value (any length)."""
    kv = layout(data).kv(key)
    return splice_header(data, kv.type_pos, kv.end, struct.pack("<I", vtype) + payload)


def drop_key(data: bytes, key: str) -> bytes:
    kv = layout(data).kv(key)
    return splice_header(data, kv.start, kv.end, b"", kv_delta=-1)


def add_key(data: bytes, key: str, vtype: int, payload: bytes) -> bytes:
    """Append a metadata entry after the last one."""
    last = layout(data).kvs[-1]
    entry = gguf_string(key) + struct.pack("<I", vtype) + payload
    return splice_header(data, last.end, last.end, entry, kv_delta=1)
