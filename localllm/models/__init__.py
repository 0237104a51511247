"""Architecture registry, keyed by the GGUF's `general.architecture`.

Importing this package is cheap; the numba-backed Transformer is imported only
when a model is actually loaded.
"""

from __future__ import annotations

from ..errors import GGUFError
from ..gguf import GGUFFile
from . import gemma3, llama, qwen2
from .spec import ArchSpec

ARCHITECTURES: dict[str, ArchSpec] = {m.SPEC.name: m.SPEC for m in (llama, gemma3, qwen2)}


def arch_spec(g: GGUFFile) -> ArchSpec:
    arch = g.architecture
    if arch not in ARCHITECTURES:
        raise GGUFError(f"unsupported architecture {arch!r} (supported: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[arch]


def load_model(g: GGUFFile):
    """A Transformer over g's weights (zero-copy views)."""
    from .transformer import Transformer

    return Transformer(g, arch_spec(g))


__all__ = ["ARCHITECTURES", "ArchSpec", "arch_spec", "load_model"]
