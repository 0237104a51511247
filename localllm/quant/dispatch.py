"""QuantTensor, linear() and dequantize(): the entry points the model code calls.

linear(x, w) runs one kernel for every number of activation rows M: decode
(M = 1), speculative verification (a few rows) and prompt chunks (hundreds)
meet the same arithmetic, so a row's result never depends on what shares its
call (DEVELOPERS.md, "one arithmetic per row"):
  * x86 (isa.KERNEL_PATH avx2 / avx512), integer formats: activations are
    quantized to the weight type's llama.cpp partner (Q8_0 / Q8_1 / Q8_K) and
    meet the weight blocks in integer dot products (int_gemm, tiled by gemm_tiles);
  * F32 / F16 / BF16 weights: float dots (matmul_float);
  * everything else, and every format on the portable path: a dequantized row
    dotted with f32 activations (matmul_generic).
"""

import localllm._numba_setup  # noqa: F401

import numba
import numpy as np

from localllm.isa import KERNEL_PATH, USE_X86
from localllm.kernels import PAR_ROWS
from localllm.quant.dequant import dequant_rows
from localllm.quant.formats import get_format
from localllm.quant.gemm_tiles import row_tiles
from localllm.quant.matmul_float import mm_float
from localllm.quant.matmul_generic import mm_generic
from localllm.quant.q8act import ACT_FORMAT, new_activation_buffers, quantize_activations, quantize_activations_par

FLOAT_CODES = (0, 1, 30)  # F32, F16, BF16: float dots, no activation codes

if USE_X86:
    from localllm.quant.int_gemm import KERNELS
else:
    KERNELS = {}


def kernel_path() -> str:
    """'avx512', 'avx2' or 'portable': which matmul kernels this process uses (see isa.py)."""
    return KERNEL_PATH


def _readonly(a: np.ndarray) -> np.ndarray:
    # Memmaps are readonly; make everything else readonly too so each kernel
    # compiles once instead of once per writability.
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


class QuantTensor:
    """A weight matrix W (N, K) = (out_features, in_features) kept in its GGUF encoding.

    raw is the (N, row_bytes) uint8 view of the tensor data (zero copy, e.g. a
    read-only np.memmap); F32/F16/BF16 tensors are passed the same way.
    """

    __slots__ = ("raw", "qtype", "shape", "fmt")

    def __init__(self, raw: np.ndarray, qtype, shape):
        self.fmt = get_format(qtype)
        self.qtype = self.fmt.qtype
        n, k = (int(s) for s in shape)
        self.shape = (n, k)
        row_bytes = self.fmt.row_bytes(k)
        if raw.dtype != np.uint8:
            raw = raw.view(np.uint8)
        if raw.shape != (n, row_bytes):
            raw = raw.reshape(n, row_bytes)
        if not raw.flags.c_contiguous:
            raise ValueError("QuantTensor.raw must be C-contiguous")
        self.raw = _readonly(raw)

    def __repr__(self) -> str:
        return f"QuantTensor({self.qtype.name}, shape={self.shape})"


def _n_tiles(n_rows: int) -> int:
    # Equal tiles, 4 per thread: prange hands out contiguous chunks statically.
    return max(1, min(n_rows, 4 * numba.get_num_threads()))


def quantize(x: np.ndarray, kind: int):
    """x (M, K) float32 as activation codes in format `kind`: (xq, xd, xm, xs), see q8act."""
    bufs = new_activation_buffers(*x.shape)
    (quantize_activations_par if x.shape[0] >= PAR_ROWS else quantize_activations)(x, kind, *bufs)
    return bufs


def _matmul(x: np.ndarray, w: "QuantTensor", out: np.ndarray, act_cache: dict | None = None) -> None:
    if x.shape[0] == 0:  # a prompt chunk that asks for no logits rows
        return
    code = w.fmt.code
    if code in KERNELS:
        kind = ACT_FORMAT[code]
        acts = act_cache.get(kind) if act_cache is not None else None
        if acts is None:  # quantized once per input and format (Q, K, V share it)
            acts = quantize(x, kind)
            if act_cache is not None:
                act_cache[kind] = acts
        KERNELS[code](w.raw, *acts, out, row_tiles(w.shape[0], x.shape[0], numba.get_num_threads()))
    elif code in FLOAT_CODES:
        mm_float(w.raw, code, x, out, _n_tiles(w.shape[0]))
    else:
        mm_generic(w.raw, code, x, out, _n_tiles(w.shape[0]))


def linear(x: np.ndarray, w: QuantTensor, out: np.ndarray | None = None) -> np.ndarray:
    """out (M, N) = x (M, K) @ dequant(W).T, float32. A 1-D x gives a 1-D out."""
    vec = x.ndim == 1
    x2 = np.ascontiguousarray(x.reshape(1, -1) if vec else x, dtype=np.float32)
    m, k = x2.shape
    n = w.shape[0]
    if k != w.shape[1]:
        raise ValueError(f"x has {k} features, weight {w!r} expects {w.shape[1]}")
    if out is None:
        out = np.empty((m, n), np.float32)
    target = out.reshape(1, n) if vec and out.ndim == 1 else out
    if target.shape != (m, n) or target.dtype != np.float32 or not target.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(m, n)}")
    _matmul(x2, w, target)
    return out.reshape(n) if vec and out.ndim == 2 else out


def dequantize(raw: np.ndarray, qtype, shape) -> np.ndarray:
    """Float32 copy of a GGUF tensor: (N, K), or (K,) for a 1-D shape."""
    shape = tuple(int(s) for s in shape)
    n, k = (1, shape[0]) if len(shape) == 1 else (int(np.prod(shape[:-1])), shape[-1])
    w = QuantTensor(raw, qtype, (n, k))
    out = np.empty((n, k), np.float32)  # (N, K)
    dequant_rows(w.raw, w.fmt.code, 0, out)
    return out.reshape(shape)
