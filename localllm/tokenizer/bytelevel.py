"""GPT-2's reversible mapping between bytes and printable characters.

Byte-level BPE vocabularies store every byte as a visible character: printable
Latin-1 bytes stand for themselves, the rest are shifted to U+0100 and up.
"""

from __future__ import annotations


def _byte_chars() -> list[str]:
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = [""] * 256
    for b in keep:
        chars[b] = chr(b)
    shift = 0
    for b in range(256):
        if not chars[b]:
            chars[b] = chr(256 + shift)
            shift += 1
    return chars


BYTE_TO_CHAR: list[str] = _byte_chars()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_CHAR)}
# str.translate table that turns a latin-1-decoded byte string into mapped characters.
_LATIN1_TO_MAPPED = {b: c for b, c in enumerate(BYTE_TO_CHAR)}


def encode_bytes(text: str) -> str:
    """UTF-8 encode text and spell each byte with its mapped character."""
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_MAPPED)


def decode_chars(piece: str) -> bytes:
    """Inverse of encode_bytes for one vocabulary piece.

    A character outside the map (possible in hand-edited vocabularies) is kept
    as its own UTF-8; llama.cpp would print an "[UNK_BYTE_...]" marker instead.
    """
    out = bytearray()
    for c in piece:
        b = CHAR_TO_BYTE.get(c)
        if b is None:
            out += c.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)
