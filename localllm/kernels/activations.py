"""Gated FFN activations: SwiGLU (llama, qwen2) and GeGLU with tanh GELU (gemma).

Both follow llama.cpp's CPU arithmetic, which the reference logits come from:
SiLU uses its vectorised expf (kernels.fmath), and
it looks GELU up in a table indexed by the f16 value of x and stores f16
results, and passes x through (or gives 0) beyond |x| >= 10.
"""

import math

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401
from localllm.quant.f16 import f16_to_f32, f32_to_f16, round_f16
from .fmath import fma32, silu8, silu_ggml
from .vec8 import load8, mul8, store8

_GELU_C = math.sqrt(2.0 / math.pi)


_CHUNK = 256  # elements per parallel work item: a decode row alone still splits across threads


@njit(cache=True, parallel=True)
def swiglu(gate, up, out):
    """out = silu(gate) * up; all (T, F) float32, with llama.cpp's expf."""
    g, u, o = gate.reshape(-1), up.reshape(-1), out.reshape(-1)
    n = g.size
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        end = min(n, (c + 1) * _CHUNK)
        i = c * _CHUNK
        while i + 8 <= end:  # 8 lanes at a time, each rounded as the scalar tail below
            store8(o, i, mul8(silu8(load8(g, i)), load8(u, i)))
            i += 8
        for i in range(i, end):
            o[i] = silu_ggml(g[i]) * u[i]


@njit(cache=True)
def _gelu_table():
    """GELU at every f16 input, rounded to f16 (as float32): llama.cpp's lookup table.

    gcc fuses llama.cpp's 1 + a*x*x into one multiply-add, so we do too.
    """
    table = np.empty(65536, np.float32)  # (65536,) indexed by the f16 bits of x
    for bits in range(65536):
        g = f16_to_f32(np.uint16(bits))
        inner = np.float32(_GELU_C) * g * fma32(np.float32(0.044715) * g, g, np.float32(1.0))
        table[bits] = round_f16(np.float32(0.5) * g * (np.float32(1.0) + np.tanh(inner)))
    return table


GELU_TABLE = _gelu_table()


@njit(cache=True, parallel=True)
def geglu_tanh(gate, up, out, table):
    """out = gelu_tanh(gate) * up; all (T, F) float32; table: GELU_TABLE."""
    g_, u_, o_ = gate.reshape(-1), up.reshape(-1), out.reshape(-1)
    n = g_.size
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            x = g_[i]
            if x <= -10.0:
                y = np.float32(0.0)
            elif x >= 10.0:
                y = x
            else:
                y = table[f32_to_f16(x)]
            o_[i] = y * u_[i]

