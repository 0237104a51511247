"""Errors raised while building a tokenizer from GGUF metadata."""


class UnsupportedTokenizer(ValueError):
    """The GGUF file names a tokenizer model or pre-tokenizer we do not implement."""
