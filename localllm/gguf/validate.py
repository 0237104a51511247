"""Checks on a GGUF tensor table, done before any byte of tensor data is read.

The numba kernels do no bounds checks, so this is the boundary: every tensor
must lie inside the file, aligned, without overlapping another, with a known
type and dimensions that divide into whole blocks.
"""

from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import GGUFError

# Larger than any real model dimension (vocabularies reach ~10^6), small enough
# that products of dims cannot overflow int64.
MAX_DIM = 1 << 32
MAX_ELEMENTS = 1 << 40


def tensor_nbytes(name: str, dims: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    """Bytes a tensor occupies; raises on dims that do not divide into whole blocks."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    if dims[0] % block:
        raise GGUFError(
            f"tensor {name!r}: row length {dims[0]} is not a multiple of the {qtype.name} block size {block}"
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
            raise GGUFError(f"duplicate tensor name {name!r}")
        names.add(name)
        if any(d == 0 for d in dims):
            raise GGUFError(f"tensor {name!r} has a zero dimension: {list(dims)}")
        if any(d > MAX_DIM for d in dims):
            raise GGUFError(f"tensor {name!r} has an absurd dimension: {list(dims)}")
        n_el = 1
        for d in dims:
            n_el *= d
        if n_el > MAX_ELEMENTS:
            raise GGUFError(f"tensor {name!r} has an absurd element count {n_el}")
        try:
            qtype = GGMLQuantizationType(qtype_id)
        except ValueError:
            raise GGUFError(f"tensor {name!r} has unknown tensor type {qtype_id}") from None
        if qtype not in GGML_QUANT_SIZES:
            raise GGUFError(f"tensor {name!r} has unknown tensor type {qtype_id}")
        n_bytes = tensor_nbytes(name, dims, qtype)
        if offset % alignment:
            raise GGUFError(f"tensor {name!r}: data offset {offset} is not aligned to {alignment} bytes")
        if offset + n_bytes > data_size:
            raise GGUFError(
                f"tensor {name!r}: data ({n_bytes} bytes at offset {offset}) runs past the end of the file"
            )
        checked.append((name, dims, qtype, offset, n_bytes))

    by_offset = sorted(checked, key=lambda e: e[3])
    for prev, cur in zip(by_offset, by_offset[1:]):
        if cur[3] < prev[3] + prev[4]:
            raise GGUFError(f"tensors {prev[0]!r} and {cur[0]!r} overlap in the file")
    return checked
