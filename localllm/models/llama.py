"""llama family: SmolLM2, Llama 2/3, TinyLlama, Mistral-style files.

RMSNorm, adjacent-pair RoPE, GQA, SwiGLU, tied or separate output head.
"""

from .spec import ArchSpec

SPEC = ArchSpec(name="llama", rope_neox=False, activation="silu")
