"""Gated FFN activations: SwiGLU (llama, qwen2) and GeGLU with tanh GELU (gemma)."""

import math

import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401

_GELU_C = math.sqrt(2.0 / math.pi)


@njit(cache=True, parallel=True, fastmath=True)
def swiglu(gate, up, out):
    """out = silu(gate) * up; all (T, F) float32."""
    T, F = gate.shape
    for t in prange(T):
        for i in range(F):
            g = gate[t, i]
            out[t, i] = g / (np.float32(1.0) + np.exp(-g)) * up[t, i]


@njit(cache=True, parallel=True, fastmath=True)
def geglu_tanh(gate, up, out):
    """out = gelu_tanh(gate) * up; all (T, F) float32."""
    T, F = gate.shape
    for t in prange(T):
        for i in range(F):
            g = gate[t, i]
            inner = np.float32(_GELU_C) * (g + np.float32(0.044715) * g * g * g)
            out[t, i] = np.float32(0.5) * g * (np.float32(1.0) + np.tanh(inner)) * up[t, i]


def gated_activation(gate: np.ndarray, up: np.ndarray, kind: str) -> np.ndarray:
    """act(gate) * up, written over gate's buffer (T, F)."""
    if kind == "silu":
        swiglu(gate, up, gate)
    elif kind == "gelu_tanh":
        geglu_tanh(gate, up, gate)
    else:
        raise ValueError(f"unknown activation {kind!r}")
    return gate
