"""Tokenizers that give the same ids as llama.cpp, built from GGUF metadata alone.

- `tokenizer.ggml.model = llama`: SentencePiece BPE, run by the sentencepiece package.
- `tokenizer.ggml.model = gpt2`: byte-level BPE with the pre-tokenizer that
  `tokenizer.ggml.pre` names.
"""

from .errors import UnsupportedTokenizer
from .pretokenize import SUPPORTED_PRE, UnsupportedPreTokenizer
from .tokenizer import Tokenizer, tokenizer_from_metadata

__all__ = ["Tokenizer", "tokenizer_from_metadata", "UnsupportedTokenizer", "UnsupportedPreTokenizer",
           "SUPPORTED_PRE"]
