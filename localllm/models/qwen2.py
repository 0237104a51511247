"""qwen2 family: the llama block with biases on Q, K and V, and NEOX RoPE."""

from .spec import ArchSpec

SPEC = ArchSpec(name="qwen2", rope_neox=True, activation="silu", qkv_bias=True)
