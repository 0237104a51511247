"""What distinguishes one architecture family from another, as flags."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    name: str
    rope_neox: bool  # pairs (i, i + d/2) instead of adjacent pairs
    activation: str  # "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    gemma_style: bool = False  # QK-norm, post norms, sliding window, scaled embeddings
    qkv_bias: bool = False
