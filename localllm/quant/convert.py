"""`localllm quantize`: rewrite a GGUF file with its 2-D weights in another format.

All metadata is kept (general.file_type is updated); 1-D tensors (norms,
biases) and tensors whose row length is not a multiple of the target block
size are copied unchanged. Already-quantized weights are dequantized first.
Output goes to a temporary file in the destination directory and is renamed
into place only when complete, so an interrupted run leaves no broken file.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T, GGUFValueType as V, LlamaFileType as FT

from localllm.quant.dispatch import dequantize
from localllm.quant.formats import FORMATS, UnsupportedQuantType

# CLI name -> (tensor type, general.file_type value)
TARGETS: dict[str, tuple[T, FT]] = {
    "f16": (T.F16, FT.MOSTLY_F16),
    "bf16": (T.BF16, FT.MOSTLY_BF16),
    "q8_0": (T.Q8_0, FT.MOSTLY_Q8_0),
    "q4_0": (T.Q4_0, FT.MOSTLY_Q4_0),
    "q4_1": (T.Q4_1, FT.MOSTLY_Q4_1),
    "q5_0": (T.Q5_0, FT.MOSTLY_Q5_0),
    "q5_1": (T.Q5_1, FT.MOSTLY_Q5_1),
}


def _target_type(t: gguf.ReaderTensor, target: T) -> T:
    """The type tensor t gets in the output."""
    if len(t.shape) != 2:
        return t.tensor_type  # norms and other 1-D tensors stay as they are
    block_size = gguf.GGML_QUANT_SIZES[target][0]
    if int(t.shape[0]) % block_size:  # shape[0] is the row length (GGUF order)
        return t.tensor_type
    return target


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, file_type: FT) -> None:
    for name, field in reader.fields.items():
        # The GGUF.* pseudo fields are the header; the writer adds the architecture itself.
        if name.startswith("GGUF.") or name == gguf.Keys.General.ARCHITECTURE:
            continue
        if name == gguf.Keys.General.FILE_TYPE:
            writer.add_uint32(name, int(file_type))
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == V.ARRAY else None
        if vtype == V.ARRAY and len(field.types) > 2:
            raise ValueError(f"metadata key {name!r}: nested arrays are not supported")
        writer.add_key_value(name, field.contents(), vtype, sub_type)
        if name == gguf.Keys.General.ALIGNMENT:
            writer.data_alignment = int(field.contents())


def _convert(t: gguf.ReaderTensor, out_type: T) -> np.ndarray:
    """The bytes of tensor t in out_type, shaped (rows, row_bytes) or as float rows."""
    if out_type == t.tensor_type:
        return np.asarray(t.data)
    if t.tensor_type not in FORMATS:
        raise UnsupportedQuantType(t.tensor_type)
    k = int(t.shape[0])
    n = int(t.n_elements) // k
    raw = np.asarray(t.data).view(np.uint8).reshape(n, -1)
    w = dequantize(raw, t.tensor_type, (n, k))  # (N, K) float32
    return gguf.quants.quantize(w, out_type)


def quantize_gguf(
    src_path: str | os.PathLike,
    dst_path: str | os.PathLike,
    type_name: str,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write dst_path: src_path's model with 2-D weights converted to `type_name`."""
    try:
        target, file_type = TARGETS[type_name.lower()]
    except KeyError:
        raise ValueError(f"unknown quantization type {type_name!r}; choose from {', '.join(TARGETS)}") from None
    dst = Path(dst_path)
    reader = gguf.GGUFReader(src_path)
    arch_field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise ValueError(f"{src_path}: missing metadata key {gguf.Keys.General.ARCHITECTURE!r}")

    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent or ".")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the output should read like any new file
    try:
        writer = gguf.GGUFWriter(tmp, arch_field.contents())
        _copy_metadata(reader, writer, file_type)
        plan = [(t, _target_type(t, target)) for t in reader.tensors]
        for t, out_type in plan:
            block_size, type_size = gguf.GGML_QUANT_SIZES[out_type]
            nbytes = int(t.n_elements) // block_size * type_size
            shape = [int(s) for s in reversed(t.shape)]  # numpy order
            writer.add_tensor_info(t.name, shape, np.dtype(np.float32), nbytes, raw_dtype=out_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (t, out_type) in enumerate(plan):
            writer.write_tensor_data(_convert(t, out_type))
            if progress is not None:
                progress(i + 1, len(plan))
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        try:
            writer.close()
        except Exception:
            pass
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
