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
from localllm.quant.f16 import round_f16
from .fmath import fma32, silu_ggml

_GELU_C = math.sqrt(2.0 / math.pi)


@njit(cache=True, parallel=True)
def swiglu(gate, up, out):
    """out = silu(gate) * up; all (T, F) float32, with llama.cpp's expf."""
    T, F = gate.shape
    for t in prange(T):
        for i in range(F):
            out[t, i] = silu_ggml(gate[t, i]) * up[t, i]


@njit(cache=True, parallel=True)
def geglu_tanh(gate, up, out):
    """out = gelu_tanh(gate) * up; all (T, F) float32."""
    T, F = gate.shape
    for t in prange(T):
        for i in range(F):
            x = gate[t, i]
            if x <= -10.0:
                y = np.float32(0.0)
            elif x >= 10.0:
                y = x
            else:
                g = round_f16(x)
                # gcc fuses llama.cpp's 1 + a*x*x into one multiply-add; so do we
                inner = np.float32(_GELU_C) * g * fma32(np.float32(0.044715) * g, g, np.float32(1.0))
                y = round_f16(np.float32(0.5) * g * (np.float32(1.0) + np.tanh(inner)))
            out[t, i] = y * up[t, i]


def gated_activation(gate: np.ndarray, up: np.ndarray, kind: str) -> np.ndarray:
    """act(gate) * up, written over gate's buffer (T, F)."""
    if kind == "silu":
        swiglu(gate, up, gate)
    elif kind == "gelu_tanh":
        geglu_tanh(gate, up, gate)
    else:
        raise ValueError(f"unknown activation {kind!r}")
    return gate
