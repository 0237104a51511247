"""Checks on a GGUF header (tensor table and metadata types), done before any
byte of tensor data is read.

The numba kernels do no bounds checks, so this is the boundary: every tensor
must lie inside the file, aligned, without overlapping another, with a known
type and dimensions that divide into whole blocks.

On top of that we apply llama.cpp's layout rule: tensor i starts exactly where
tensor i-1 (in table order) ends, padded to the alignment. A tensor whose type
or shape was changed to a smaller one then no longer fills its slot and the
file is refused, instead of its bytes being read as a different format.
"""

from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import GGUFError
from .quote import quote, quote_value

# Larger than any real model dimension (vocabularies reach ~10^6), small enough
# that products of dims cannot overflow int64.
MAX_DIM = 1 << 32
MAX_ELEMENTS = 1 << 40
# ggml's GGML_MAX_NAME is 64 bytes including the terminating NUL.
MAX_TENSOR_NAME = 63
MAX_NAME = 64  # for values that are identifiers: architecture, tokenizer model

# The type each standard key the runtime reads must have (llama.cpp refuses a
# key of the wrong type the same way); checked once at open so that no consumer
# meets, say, a string where it expects a list of token ids.
_KEY_KINDS = {
    "general.architecture": "name",
    "tokenizer.ggml.model": "name",
    "tokenizer.ggml.pre": "name",
    "tokenizer.chat_template": "string",
    "tokenizer.ggml.tokens": "array of strings",
    "tokenizer.ggml.merges": "array of strings",
    "tokenizer.ggml.token_type": "array of integers",
    "tokenizer.ggml.scores": "array of floats",
}


def _kind_of(key: str) -> str | None:
    if key in _KEY_KINDS:
        return _KEY_KINDS[key]
    if key.startswith("tokenizer.ggml."):
        if key.endswith("_token_id"):
            return "integer"
        if key.startswith("tokenizer.ggml.add_"):
            return "boolean"
    return None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _has_kind(v, kind: str) -> bool:
    if kind == "name":
        return isinstance(v, str) and 0 < len(v) <= MAX_NAME and v.isascii() and v.isprintable()
    if kind == "string":
        return isinstance(v, str)
    if kind == "integer":
        return _is_int(v)
    if kind == "boolean":
        return isinstance(v, bool)
    if not isinstance(v, list):
        return False
    if not v:
        return True
    # a GGUF array has one element type, so its first element speaks for all
    first = v[0]
    return {"array of strings": isinstance(first, str), "array of integers": _is_int(first),
            "array of floats": isinstance(first, float)}[kind]


def _described(kind: str) -> str:
    if kind == "name":
        return f"a short name (at most {MAX_NAME} printable ASCII characters)"
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def check_metadata_types(metadata: dict) -> None:
    """Refuse a standard key whose value has the wrong type."""
    for key, value in metadata.items():
        kind = _kind_of(key)
        if kind is not None and not _has_kind(value, kind):
            raise GGUFError(f"metadata {quote(key)} must be {_described(kind)}, got {quote_value(value)}")


def _padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def tensor_nbytes(name: str, dims: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    """Bytes a tensor occupies; raises on dims that do not divide into whole blocks."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    if dims[0] % block:
        raise GGUFError(
            f"tensor {quote(name)}: row length {dims[0]} is not a multiple of the {qtype.name} block size {block}"
        )
    n = 1
    for d in dims:
        n *= d
    return n // block * type_size


def check_tensor_table(entries, alignment: int, data_size: int):
    """Validate (name, dims, type, offset) entries; return them with types resolved and sizes added."""
    checked = []
    names = set()
    for name, dims, qtype_id, offset in entries:
        if name in names:
            raise GGUFError(f"duplicate tensor name {quote(name)}")
        names.add(name)
        if any(d == 0 for d in dims):
            raise GGUFError(f"tensor {quote(name)} has a zero dimension: {list(dims)}")
        if any(d > MAX_DIM for d in dims):
            raise GGUFError(f"tensor {quote(name)} has an absurd dimension: {list(dims)}")
        n_el = 1
        for d in dims:
            n_el *= d
        if n_el > MAX_ELEMENTS:
            raise GGUFError(f"tensor {quote(name)} has an absurd element count {n_el}")
        try:
            qtype = GGMLQuantizationType(qtype_id)
        except ValueError:
            raise GGUFError(f"tensor {quote(name)} has unknown tensor type {qtype_id}") from None
        if qtype not in GGML_QUANT_SIZES:
            raise GGUFError(f"tensor {quote(name)} has unknown tensor type {qtype_id}")
        n_bytes = tensor_nbytes(name, dims, qtype)
        if offset % alignment:
            raise GGUFError(f"tensor {quote(name)}: data offset {offset} is not aligned to {alignment} bytes")
        if offset + n_bytes > data_size:
            raise GGUFError(
                f"tensor {quote(name)}: data ({n_bytes} bytes at offset {offset}) runs past the end of the file"
            )
        checked.append((name, dims, qtype, offset, n_bytes))

    by_offset = sorted(checked, key=lambda e: e[3])
    for prev, cur in zip(by_offset, by_offset[1:]):
        if cur[3] < prev[3] + prev[4]:
            raise GGUFError(f"tensors {quote(prev[0])} and {quote(cur[0])} overlap in the file")

    _check_packed_in_order(checked, alignment, data_size)
    return checked


def _check_packed_in_order(checked, alignment: int, data_size: int) -> None:
    """llama.cpp's rule: each tensor starts where the previous one in the table ends
    (padded). We add that nothing but padding follows the last one, or a shrunk
    last tensor would go unnoticed: gguf-py and llama.cpp both write files that
    end there."""
    expected = 0
    prev = None
    for name, _dims, qtype, offset, n_bytes in checked:
        if offset != expected:
            after = "at the start of the data" if prev is None else (
                f"after {quote(prev[0])} ({prev[2].name}, {prev[4]} bytes)")
            raise GGUFError(
                f"tensor {quote(name)}: data offset {offset}, expected {expected} {after}: "
                f"a tensor's type or shape does not match the file's layout"
            )
        expected += _padded(n_bytes, alignment)
        prev = (name, _dims, qtype, offset, n_bytes)
    if data_size > expected:
        last = f"the last tensor, {quote(prev[0])} ({prev[2].name}, {prev[4]} bytes)" if prev else "the header"
        raise GGUFError(
            f"{data_size - expected} unexplained bytes follow {last}: "
            f"a tensor's type or shape does not match the file's layout"
        )
