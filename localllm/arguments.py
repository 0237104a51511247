"""Argument checks at the Python API boundary (`LLM.generate`, `stream`, `chat`, ...).

A wrong type raises `ArgumentError` (also a TypeError), an impossible value
`ArgumentValueError` (also a ValueError); both are usage errors, so the CLI
prints them as one line. Each message names what is accepted. Sampling numbers
(temperature, top_p, max_tokens, ...) are checked by `SamplingParams` itself and
not repeated here.

Text arguments come back through `utf8_safe`, so a lone surrogate becomes
U+FFFD instead of a UnicodeEncodeError inside the tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentValueError
from .text_input import utf8_safe

PROMPT_TYPES = "a str or a list of token ids (int)"


def _type_name(value: Any) -> str:
    return type(value).__name__


def is_token_id(value: Any) -> bool:
    """An int or numpy integer, and not a bool (True is an int to Python, never a token to us)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_id_sequence(value: Any) -> bool:
    """A list, tuple, range or 1-D integer array: something that may hold token ids."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return isinstance(value, (list, tuple, range))


def check_text(text: Any, name: str = "text") -> str:
    """A str, with anything that cannot be UTF-8 encoded replaced by U+FFFD."""
    if not isinstance(text, str):
        hint = " (decode bytes first, e.g. data.decode('utf-8'))" if isinstance(text, (bytes, bytearray)) else ""
        raise ArgumentError(f"{name} must be a str, got {_type_name(text)}{hint}")
    return utf8_safe(text)


def check_int(value: Any, name: str) -> int:
    """An int (numpy integers too, bools not); the range is the caller's to check."""
    if not is_token_id(value):
        raise ArgumentError(f"{name} must be an int, got {_type_name(value)} {value!r}")
    return int(value)


def check_ids(ids: Any, n_vocab: int, name: str = "token ids") -> list[int]:
    """A sequence of token ids, each an int in [0, n_vocab), as a plain list of ints."""
    if not _is_id_sequence(ids):
        raise ArgumentError(f"{name} must be a list of ints, got {_type_name(ids)}")
    out = []
    for i, t in enumerate(ids):
        if not is_token_id(t):
            raise ArgumentError(f"{name} must be ints, got {_type_name(t)} {t!r} at position {i}")
        if not 0 <= t < n_vocab:
            raise ArgumentValueError(f"{name} must be in [0, {n_vocab}), got {int(t)} at position {i}")
        out.append(int(t))
    return out


def check_prompt(prompt: Any, n_vocab: int, adds_bos: bool = False) -> str | list[int]:
    """One prompt: a str, or a non-empty list of token ids in [0, n_vocab).

    adds_bos says whether a str prompt gets BOS; without it an empty string
    has no tokens at all, which is refused here rather than deep in generation."""
    if isinstance(prompt, str):
        if not prompt and not adds_bos:
            raise ArgumentValueError("the prompt is empty")
        return utf8_safe(prompt)
    if not _is_id_sequence(prompt):
        raise ArgumentError(f"a prompt must be {PROMPT_TYPES}, got {_type_name(prompt)}")
    ids = check_ids(prompt, n_vocab, name="prompt token ids")
    if not ids:
        raise ArgumentValueError("the prompt is empty (no token ids)")
    return ids


def _looks_like_batch(prompt: Any) -> bool:
    """A list or tuple whose first item is itself a prompt (a str or a sequence), not a token id."""
    return (isinstance(prompt, (list, tuple)) and len(prompt) > 0
            and (isinstance(prompt[0], str) or _is_id_sequence(prompt[0])))


def check_prompts(prompt: Any, n_vocab: int, adds_bos: bool = False) -> str | list[int] | list[str | list[int]]:
    """generate's argument: one prompt, or a list of prompts (returned as a list)."""
    if _looks_like_batch(prompt):
        return [check_prompt(p, n_vocab, adds_bos) for p in prompt]
    return check_prompt(prompt, n_vocab, adds_bos)


def check_stop(stop: Any) -> None:
    """stop is None, a str, or a list of str (SamplingParams checks each string)."""
    if stop is not None and not isinstance(stop, (str, list, tuple)):
        raise ArgumentError(f"stop must be a str or a list of str, got {_type_name(stop)}")


def check_messages(messages: Any) -> list[dict]:
    """A list of {"role": str, "content": str} mappings, copied with their text made UTF-8 safe."""
    if not isinstance(messages, (list, tuple)):
        raise ArgumentError(f'messages must be a list of {{"role": ..., "content": ...}} dicts, '
                            f"got {_type_name(messages)}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ArgumentError(f'messages[{i}] must be a dict with "role" and "content", got {_type_name(m)}')
        for key in ("role", "content"):
            if key not in m:
                raise ArgumentValueError(f'messages[{i}] has no "{key}"')
            if not isinstance(m[key], str):
                raise ArgumentError(f'messages[{i}]["{key}"] must be a str, got {_type_name(m[key])}')
        out.append({**m, "content": utf8_safe(m["content"])})
    return out
