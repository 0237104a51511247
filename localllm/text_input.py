"""Text from outside (argv, stdin, chat input, API callers) made safe for a UTF-8 tokenizer.

The tokenizers work on UTF-8 bytes, and some strings have none: Python hands
undecodable argv and stdin bytes over as lone surrogates (surrogateescape), and
a caller may pass any `str`. Rather than fail deep inside with a
UnicodeEncodeError, every character that cannot be encoded becomes U+FFFD, the
replacement character, exactly as decoding the bytes with errors="replace" does.
"""

from __future__ import annotations

import sys
from typing import IO

REPLACEMENT = "\ufffd"


def utf8_safe(text: str) -> str:
    """text unchanged when it encodes as UTF-8; else each undecodable part replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        # surrogateescape'd bytes (U+DC80..U+DCFF) turn back into the bytes they stood for,
        # so a broken multi-byte sequence becomes one U+FFFD, as a replace-decode would give
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        # other lone surrogates: UTF-16 joins a valid high+low pair into its character
        # and replaces what stays alone
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def read_text(stream: IO | None = None) -> str:
    """All of a text stream (stdin by default), decoded as UTF-8 with invalid bytes replaced."""
    stream = sys.stdin if stream is None else stream
    raw = getattr(stream, "buffer", None)
    if raw is None:  # an in-memory text stream (tests, embedding): already str
        return utf8_safe(stream.read())
    return raw.read().decode("utf-8", errors="replace")


def replace_undecodable_input(stream: IO | None = None) -> None:
    """Make `input()` on this stream (stdin by default) decode invalid bytes to U+FFFD instead of failing."""
    stream = sys.stdin if stream is None else stream
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None and getattr(stream, "errors", "replace") != "replace":
        try:
            reconfigure(errors="replace")
        except (ValueError, OSError):  # a detached or closed stream: leave it as it is
            pass
