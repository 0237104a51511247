"""Pre-tokenizers for byte-level BPE: split text into words before merging.

Each `tokenizer.ggml.pre` value names a list of regexes (the facts are taken
from llama.cpp's llama-vocab.cpp). llama.cpp applies them in sequence: every
regex splits each piece produced so far, and text between matches is kept as a
piece of its own, never dropped.

`\\s` means llama.cpp's whitespace set (Unicode White_Space), which differs
from Python's: Python also counts U+001C..U+001F as space.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

from .errors import UnsupportedTokenizer

_WS = "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_REGEXES = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "gpt2": (_GPT2,),
    "llama3": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "smollm": (r"\p{N}", _GPT2),
}


@dataclass(frozen=True)
class PreConfig:
    regexes: str          # key into _REGEXES
    clean_spaces: bool    # detokenizer removes spaces before punctuation (HF clean_up_tokenization_spaces)
    ignore_merges: bool   # a word that is already a token is not merged piecewise
    add_bos: bool = False  # default when the file has no add_bos_token key


# Pre-tokenizer names llama.cpp maps onto these regex sets, with its flags.
_PRE = {
    "default": PreConfig("default", True, False),
    "gpt-2": PreConfig("gpt2", True, False),
    "phi-2": PreConfig("gpt2", True, False),
    "mpt": PreConfig("gpt2", True, False),
    "olmo": PreConfig("gpt2", True, False),
    "exaone4": PreConfig("gpt2", True, False),
    "trillion": PreConfig("gpt2", False, False),
    "llama3": PreConfig("llama3", True, True, True),
    "llama-v3": PreConfig("llama3", True, True, True),
    "llama-bpe": PreConfig("llama3", True, True, True),
    "falcon3": PreConfig("llama3", True, True, True),
    "pixtral": PreConfig("llama3", True, True, True),
    "dbrx": PreConfig("llama3", True, False),
    "smaug-bpe": PreConfig("llama3", True, False),
    "qwen2": PreConfig("qwen2", False, False),
    "deepseek-r1-qwen": PreConfig("qwen2", False, False),
    "stablelm2": PreConfig("qwen2", True, False),
    "megrez": PreConfig("qwen2", True, False),
    "smollm": PreConfig("smollm", False, False),
    "starcoder": PreConfig("smollm", True, False),
    "refact": PreConfig("smollm", True, False),
    "codeshell": PreConfig("smollm", True, False),
    "command-r": PreConfig("smollm", False, False),
}

SUPPORTED_PRE = tuple(sorted(_PRE))


class UnsupportedPreTokenizer(UnsupportedTokenizer):
    """`tokenizer.ggml.pre` names a pre-tokenizer we do not implement."""


def pre_config(name: str) -> PreConfig:
    try:
        return _PRE[name]
    except KeyError:
        raise UnsupportedPreTokenizer(
            f"unsupported pre-tokenizer tokenizer.ggml.pre={name!r}; supported: {', '.join(SUPPORTED_PRE)}"
        ) from None


def _with_llama_whitespace(pattern: str) -> str:
    """Rewrite \\s and \\S to llama.cpp's whitespace set, inside and outside classes."""
    out = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(_WS if in_class else f"[{_WS}]")
            elif nxt == "S":
                if in_class:
                    raise ValueError("\\S inside a character class is not used by any pre-tokenizer")
                out.append(f"[^{_WS}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


class PreTokenizer:
    def __init__(self, name: str):
        self.config = pre_config(name)
        self._patterns = [regex.compile(_with_llama_whitespace(p)) for p in _REGEXES[self.config.regexes]]

    def split(self, text: str) -> list[str]:
        pieces = [text] if text else []
        for pattern in self._patterns:
            out: list[str] = []
            for piece in pieces:
                pos = 0
                for m in pattern.finditer(piece):
                    start, end = m.span()
                    if start > pos:
                        out.append(piece[pos:start])
                    if end > start:
                        out.append(piece[start:end])
                    pos = end
                if pos < len(piece):
                    out.append(piece[pos:])
            pieces = out
        return pieces
