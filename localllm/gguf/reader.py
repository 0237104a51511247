"""GGUF header parsing over one read-only np.memmap.

Why not `gguf.GGUFReader` for loading: it decodes every array element with a
separate numpy call, which takes ~10 s for Gemma's 262k-token vocabulary. This
parser reads the same layout (using the `gguf` package's constants) in a fraction
of a second, validates every offset before anything is computed, and hands out
tensors as views of the memmap: nothing is copied. Tests cross-check it against
`gguf.GGUFReader`.

File layout (little-endian):
    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv x (key: str, value_type u32, value)
    n_tensors x (name: str, n_dims u32, dims u64[n_dims], type u32, offset u64)
    padding to `general.alignment` (default 32) | tensor data
where str = (length u64, utf-8 bytes) and an array value = (elem_type u32, count u64, elems).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from ..errors import GGUFError
from .quote import quote, quote_value
from .validate import MAX_TENSOR_NAME, check_metadata_types, check_tensor_table

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# Guards against absurd counts before we allocate or loop on them.
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 20
MAX_ARRAY = 1 << 28
# Arrays of arrays are legal GGUF, but no model needs more than a couple of
# levels; a cap keeps a hostile file from exhausting Python's recursion limit.
MAX_ARRAY_DEPTH = 4

_SCALAR = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_NUMPY = {t: np.dtype(fmt) for t, fmt in _SCALAR.items()}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the file's table, plus its zero-copy data view."""

    name: str
    qtype: GGMLQuantizationType
    dims: tuple[int, ...]  # GGUF order: dims[0] is the contiguous (row) length
    offset: int  # absolute byte offset in the file
    n_bytes: int
    data: np.ndarray  # quantized: uint8 (rows, row_bytes); float: typed, shape reversed(dims)

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order, rows first: (N, K) for a weight of out_features N, in_features K."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.dims))

    def raw(self) -> np.ndarray:
        """The tensor's bytes as uint8 (rows, row_bytes), whatever its type."""
        rows = int(np.prod(self.dims[1:])) if len(self.dims) > 1 else 1
        return self.data.reshape(-1).view(np.uint8).reshape(rows, -1)


class TensorTable(dict):
    """name -> TensorInfo that remembers which names were looked up ([] or get()).

    A model loader takes its weights through lookups; afterwards the names
    never asked for are the tensors it ignored (see `unrequested`).
    Iteration and `in` do not count as a lookup.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requested: set[str] = set()

    def __getitem__(self, name: str) -> TensorInfo:
        self.requested.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default=None):
        self.requested.add(name)
        return super().get(name, default)

    def unrequested(self) -> list[str]:
        """Names in file order that no lookup has asked for yet."""
        return [name for name in self if name not in self.requested]


class _Cursor:
    """Bounds-checked little-endian reads from a byte buffer."""

    def __init__(self, buf: memoryview, size: int):
        self.buf = buf
        self.size = size
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(f"file is truncated: {what} at byte {self.pos} needs {n} bytes, file has {self.size}")

    def scalar(self, vtype: GGUFValueType, what: str):
        fmt = _SCALAR[vtype]
        n = struct.calcsize(fmt)
        self.need(n, what)
        (val,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return val

    def u32(self, what: str) -> int:
        return self.scalar(GGUFValueType.UINT32, what)

    def u64(self, what: str) -> int:
        return self.scalar(GGUFValueType.UINT64, what)

    def string(self, what: str, max_len: int | None = None) -> str:
        n = self.u64(what + " length")
        if max_len is not None and n > max_len:
            raise GGUFError(f"{what} is {n} bytes long (at most {max_len} allowed)")
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        # Vocabularies may hold invalid UTF-8 pieces; keep them visible, never crash.
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        try:
            vt = GGUFValueType(vtype)
        except ValueError:
            raise GGUFError(f"{what}: unknown metadata value type {vtype}") from None
        if vt == GGUFValueType.STRING:
            return self.string(what)
        if vt == GGUFValueType.ARRAY:
            return self.array(what, depth + 1)
        return self.scalar(vt, what)

    def array(self, what: str, depth: int = 1) -> list:
        if depth > MAX_ARRAY_DEPTH:
            raise GGUFError(f"{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
        etype = self.u32(what + " element type")
        count = self.u64(what + " element count")
        if count > MAX_ARRAY:
            raise GGUFError(f"{what}: absurd array length {count}")
        try:
            et = GGUFValueType(etype)
        except ValueError:
            raise GGUFError(f"{what}: unknown array element type {etype}") from None
        if et in _NUMPY:
            dt = _NUMPY[et]
            self.need(count * dt.itemsize, what)
            arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos)
            self.pos += count * dt.itemsize
            return arr.tolist()
        if et == GGUFValueType.STRING:
            return self._string_array(count, what)
        return [self.value(et, what, depth) for _ in range(count)]

    def _string_array(self, count: int, what: str) -> list[str]:
        # The hot loop for vocabularies: local names keep it fast.
        buf, pos, size, out = self.buf, self.pos, self.size, []
        unpack = struct.Struct("<Q").unpack_from
        append = out.append
        for _ in range(count):
            if pos + 8 > size:
                raise GGUFError(f"file is truncated: {what} at byte {pos}")
            (n,) = unpack(buf, pos)
            pos += 8
            if pos + n > size:
                raise GGUFError(f"file is truncated: {what} string of {n} bytes at byte {pos}")
            append(str(buf[pos : pos + n], "utf-8", "replace"))
            pos += n
        self.pos = pos
        return out


def _parse_header(cur: _Cursor) -> tuple[int, dict[str, Any], list[tuple[str, tuple[int, ...], int, int]]]:
    cur.need(4, "magic")
    magic = bytes(cur.buf[0:4])
    if magic != GGUF_MAGIC:
        raise GGUFError(f"not a GGUF file: bad magic {magic!r} (expected b'GGUF')")
    cur.pos = 4
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"unsupported GGUF version {version} (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GGUFError(f"absurd header counts: {n_tensors} tensors, {n_kv} metadata entries")

    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if key in metadata:
            raise GGUFError(f"duplicate metadata key {quote(key)}")
        vtype = cur.u32(f"type of {quote(key)}")
        metadata[key] = cur.value(vtype, f"metadata {quote(key)}")

    entries = []
    for i in range(n_tensors):
        name = cur.string(f"tensor name #{i}", MAX_TENSOR_NAME)
        q = quote(name)
        n_dims = cur.u32(f"tensor {q} dimension count")
        if not 1 <= n_dims <= 4:
            raise GGUFError(f"tensor {q} has {n_dims} dimensions (expected 1 to 4)")
        dims = tuple(cur.u64(f"tensor {q} dims") for _ in range(n_dims))
        qtype = cur.u32(f"tensor {q} type")
        offset = cur.u64(f"tensor {q} offset")
        entries.append((name, dims, qtype, offset))
    return version, metadata, entries


def _tensor_view(mm: np.memmap, start: int, n_bytes: int, qtype: GGMLQuantizationType, dims) -> np.ndarray:
    flat = mm[start : start + n_bytes]  # uint8 view, no copy
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.I32):
        dtype = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16,
                 GGMLQuantizationType.I32: np.int32}[qtype]
        return flat.view(dtype).reshape(tuple(reversed(dims)))
    rows = int(np.prod(dims[1:])) if len(dims) > 1 else 1
    return flat.reshape(rows, -1)  # (rows, row_bytes) of packed blocks


class GGUFFile:
    """A validated GGUF file: typed metadata and a tensor table over one memmap."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.file_size = self.path.stat().st_size
        except OSError as e:
            raise GGUFError(f"cannot open {self.path}: {e.strerror}") from None
        if self.file_size < 24:
            raise GGUFError(f"file is truncated: {self.path} has only {self.file_size} bytes")
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(memoryview(self._mm), self.file_size)
        self.version, self.metadata, entries = _parse_header(cur)
        check_metadata_types(self.metadata)

        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
                or alignment & (alignment - 1)):
            raise GGUFError(f"general.alignment must be a power of two, got {quote_value(alignment)}")
        self.alignment = alignment
        self.data_start = -(-cur.pos // alignment) * alignment
        checked = check_tensor_table(entries, alignment, self.file_size - self.data_start)

        self.tensors = TensorTable()
        for name, dims, qtype, offset, n_bytes in checked:
            start = self.data_start + offset
            view = _tensor_view(self._mm, start, n_bytes, qtype, dims)
            self.tensors[name] = TensorInfo(name, qtype, dims, start, n_bytes, view)

    @property
    def buffer(self) -> np.ndarray:
        """The whole file as a read-only uint8 array: the memmap every tensor is a view of."""
        return np.asarray(self._mm)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError("missing required metadata key 'general.architecture'")
        return arch

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())

    def quant_mix(self) -> dict[str, tuple[int, int]]:
        """Tensor type name -> (tensor count, bytes), largest first."""
        counts: Counter = Counter()
        sizes: Counter = Counter()
        for t in self.tensors.values():
            counts[t.qtype.name] += 1
            sizes[t.qtype.name] += t.n_bytes
        return {k: (counts[k], sizes[k]) for k, _ in sizes.most_common()}

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, arch={self.metadata.get('general.architecture')!r}, tensors={len(self.tensors)})"


def open_gguf(path: str | Path) -> GGUFFile:
    """Open and validate a GGUF file; raises GGUFError with one clear line on any problem."""
    return GGUFFile(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Only the metadata of a GGUF file, as plain Python values."""
    return open_gguf(path).metadata


__all__ = ["GGUFFile", "TensorInfo", "TensorTable", "open_gguf", "read_metadata", "GGML_QUANT_SIZES"]
