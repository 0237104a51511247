"""QuantTensor, linear() and dequantize(): the entry points the model code calls.

linear(x, w) picks a kernel by the number of activation rows M:
  * M <= SMALL_M_MAX (decode, batched decode, speculative verification,
    short prompt chunks): one pass over the weights, each weight row dotted
    with all M activation rows while it sits in L1; integer dots on AVX2 for
    the fast formats, f32 otherwise.
  * larger M (prompt processing): weights are dequantized into an f32 tile
    (the whole matrix when it fits in TILE_BYTES) by numba's threads, and
    numpy's BLAS sgemm does the FLOPs. This used to dequantize on one thread,
    because OpenBLAS's spinning workers fought numba's; since localllm makes
    them sleep (OPENBLAS_THREAD_TIMEOUT, see __init__) the parallel version
    wins: SmolLM2 pp512 0.80 -> 0.76 s, with one tile per matrix 0.86 -> 0.76.
Measured on the 2-core Xeon (scripts/bench_quant.py, 4096x4096 Q4_0, busy
machine): one-pass ~27-43 GFLOP/s flat in M; dequant+sgemm 11 at M=32, ~30-39
at M=128, ~82 at M=512. F32 weights need no dequantization, so they switch to
sgemm early.
"""

import os

import localllm._numba_setup  # noqa: F401

import numba
import numpy as np
from llvmlite import binding as _llvm

from localllm.quant.dequant import dequant_rows
from localllm.quant.formats import get_format
from localllm.quant.matmul_generic import mm_generic
from localllm.quant.q8act import ACT_FORMAT, quantize_activations

# Up to this many rows, the one-pass kernels win over dequantize + sgemm (measured,
# crossover ~M=100 on a busy 2-core machine; re-measure with scripts/bench_quant.py).
SMALL_M_MAX = 64
# F32 weights go straight to sgemm above this many rows.
F32_SMALL_M_MAX = 8
# Rows per dequantized weight tile in the large-M path: small models' matrices fit whole.
TILE_BYTES = 8 << 20
FLOAT_CODES = (0, 1, 30)  # F32, F16, BF16: float dots, no activation codes


def _host_has_avx2() -> bool:
    feats = _llvm.get_host_cpu_features()
    return bool(feats.get("avx2", False) and feats.get("fma", False) and feats.get("f16c", False))


# The intrinsic kernels live in their own module so an ARM build never compiles them,
# and so numba's on-disk cache never mixes the two paths.
USE_X86 = _host_has_avx2() and os.environ.get("LOCALLLM_PORTABLE", "") not in ("1", "true", "yes")
if USE_X86:
    from localllm.quant import matvec_x86


def kernel_path() -> str:
    """'avx2' or 'portable': which matvec kernels this process uses."""
    return "avx2" if USE_X86 else "portable"


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


def _quantized(x: np.ndarray, kind: int, cache: dict | None):
    """x's int8 codes in activation format `kind`, made once per input and format."""
    if cache is not None and kind in cache:
        return cache[kind]
    m, k = x.shape
    xq = np.empty((m, k), np.int8)  # (M, K) activation codes
    xd = np.empty((m, k // 32), np.float32)  # (M, K/32) block scales
    xm = np.empty((m, k // 32), np.float32)  # (M, K/32) scale * code sum
    quantize_activations(x, kind, xq, xd, xm)
    if cache is not None:
        cache[kind] = (xq, xd, xm)
    return xq, xd, xm


def _small_m(x: np.ndarray, w: QuantTensor, out: np.ndarray, act_cache: dict | None = None) -> None:
    code = w.fmt.code
    tiles = _n_tiles(w.shape[0])
    if USE_X86 and code in matvec_x86.KERNELS:
        xq, xd, xm = _quantized(x, ACT_FORMAT[code], act_cache)
        matvec_x86.KERNELS[code](w.raw, xq, xd, xm, out, tiles)
    elif USE_X86 and code in FLOAT_CODES:
        matvec_x86.mm_float(w.raw, code, x, out, tiles)
    else:
        mm_generic(w.raw, code, x, out, tiles)


def _large_m(x: np.ndarray, w: QuantTensor, out: np.ndarray) -> None:
    n, k = w.shape
    if w.fmt.code == 0:  # F32 weights need no conversion: one sgemm
        np.matmul(x, w.raw.view(np.float32).T, out=out)
        return
    rows = max(16, min(n, TILE_BYTES // (4 * k)))
    tile = np.empty((rows, k), np.float32)  # (T, K) dequantized weight rows
    if rows == n:  # the whole matrix in one tile: one sgemm straight into out
        dequant_rows(w.raw, w.fmt.code, 0, tile)
        np.matmul(x, tile.T, out=out)
        return
    part = np.empty((x.shape[0], rows), np.float32)  # (M, T) sgemm result
    for r0 in range(0, n, rows):
        t = min(rows, n - r0)
        dequant_rows(w.raw, w.fmt.code, r0, tile[:t])
        np.matmul(x, tile[:t].T, out=part[:, :t])
        out[:, r0 : r0 + t] = part[:, :t]


def linear_many(x: np.ndarray, ws) -> list[np.ndarray]:
    """[x @ dequant(W).T for W in ws]: projections of one input (Q, K, V; gate, up).

    The input is quantized once per activation format and shared by the weights.
    x: float32 (M, K); each result float32 (M, N_w).
    """
    x2 = np.ascontiguousarray(x, dtype=np.float32)
    m = x2.shape[0]
    cache: dict = {}
    outs = []
    for w in ws:
        if x2.shape[1] != w.shape[1]:
            raise ValueError(f"x has {x2.shape[1]} features, weight {w!r} expects {w.shape[1]}")
        out = np.empty((m, w.shape[0]), np.float32)  # (M, N_w)
        if m <= (F32_SMALL_M_MAX if w.fmt.code == 0 else SMALL_M_MAX):
            _small_m(x2, w, out, cache)
        else:
            _large_m(x2, w, out)
        outs.append(out)
    return outs


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
    if m <= (F32_SMALL_M_MAX if w.fmt.code == 0 else SMALL_M_MAX):
        _small_m(x2, w, target)
    else:
        _large_m(x2, w, target)
    return out.reshape(n) if vec and out.ndim == 2 else out


def dequantize(raw: np.ndarray, qtype, shape) -> np.ndarray:
    """Float32 copy of a GGUF tensor: (N, K), or (K,) for a 1-D shape."""
    shape = tuple(int(s) for s in shape)
    n, k = (1, shape[0]) if len(shape) == 1 else (int(np.prod(shape[:-1])), shape[-1])
    w = QuantTensor(raw, qtype, (n, k))
    out = np.empty((n, k), np.float32)  # (N, K)
    dequant_rows(w.raw, w.fmt.code, 0, out)
    return out.reshape(shape)
