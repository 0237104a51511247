"""Errors raised while building a tokenizer from GGUF metadata."""

from ..errors import GGUFError


class UnsupportedTokenizer(GGUFError, ValueError):
    """The GGUF file names a tokenizer model or pre-tokenizer we do not implement."""
