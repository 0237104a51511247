"""Token ids back to text, whole or streamed.

Control tokens: llama.cpp's detokenizer helper (common_detokenize) renders
special tokens by default, so `special=True` is the default here too:
`<bos>`, `<|im_end|>` come out as their text. With `special=False` control
and unknown tokens render as nothing (llama_token_to_piece's special=false).
User-defined tokens always render as their raw text.
"""

from __future__ import annotations

import codecs
from typing import Sequence

from .bytelevel import decode_chars
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, Vocab

_SPACE_MARK = "\u2581"


class Detokenizer:
    def __init__(self, vocab: Vocab, byte_level: bool, clean_spaces: bool):
        self.vocab = vocab
        self.byte_level = byte_level
        self.clean_spaces = clean_spaces
        # SentencePiece vocabularies drop the dummy-prefix space of the first token.
        self.strip_first_space = vocab.add_space_prefix
        self._pieces: list[bytes | None] = [None] * vocab.size

    def piece(self, token_id: int, special: bool = True) -> bytes:
        if not 0 <= token_id < self.vocab.size:
            raise ValueError(f"token id {token_id} is out of range for a vocabulary of {self.vocab.size}")
        if not special and self.vocab.attrs[token_id] & (CONTROL | UNKNOWN):
            return b""
        cached = self._pieces[token_id]
        if cached is None:
            cached = self._pieces[token_id] = self._render(token_id)
        return cached

    def _render(self, token_id: int) -> bytes:
        attr = self.vocab.attrs[token_id]
        text = self.vocab.tokens[token_id]
        if attr & (CONTROL | UNKNOWN | USER_DEFINED):
            return text.encode("utf-8")
        if attr & NORMAL:
            if self.byte_level:
                return decode_chars(text)
            return text.replace(_SPACE_MARK, " ").encode("utf-8")
        if attr & BYTE:
            return bytes([int(text[3:5], 16)])
        return b""   # unused / undefined types render as nothing, as in llama.cpp

    def decode_bytes(self, ids: Sequence[int], special: bool = True) -> bytes:
        pieces = [self.piece(int(i), special) for i in ids]
        if pieces and self.strip_first_space and pieces[0].startswith(b" "):
            pieces[0] = pieces[0][1:]
        data = b"".join(pieces)
        return clean_up_spaces(data) if self.clean_spaces else data

    def decode(self, ids: Sequence[int], special: bool = True) -> str:
        return self.decode_bytes(ids, special).decode("utf-8", errors="replace")


def clean_up_spaces(data: bytes) -> bytes:
    """llama.cpp's clean_spaces passes, done in place on the bytes as it does.

    1. drop a space before ? ! . ,
    2. " ' " -> "'" (the second space is overwritten by NUL in place, which the
       following check then sees)
    3. drop the space before 's 'm 're 've
    """
    buf = bytearray(data)

    def first_pass(n: int) -> int:
        total = 1 if n else 0
        for i in range(1, n):
            x = buf[i]
            if buf[i - 1] == 0x20 and x in b"?!.,":
                total -= 1
            buf[total] = x
            total += 1
        return total

    def second_pass(n: int) -> int:
        total = 1 if n else 0
        i = 1
        while i < n:
            x = buf[i]
            if x == 0x27 and i + 1 < n and buf[i - 1] == 0x20 and buf[i + 1] == 0x20:
                total -= 1
                i += 1
                buf[i] = 0
            buf[total] = x
            total += 1
            i += 1
        return total

    def third_pass(n: int) -> int:
        total = 1 if n else 0
        for i in range(1, n):
            x = buf[i]
            if buf[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
                x1 = buf[i + 1]
                if x1 in b"sm":
                    total -= 1
                elif x1 not in b"td" and i + 2 < n and (x1, buf[i + 2]) in ((0x72, 0x65), (0x76, 0x65)):
                    total -= 1
            buf[total] = x
            total += 1
        return total

    n = first_pass(len(buf))
    n = second_pass(n)
    n = third_pass(n)
    return bytes(buf[:n])


class StreamDecoder:
    """Feed token ids one at a time; get back only complete UTF-8 characters.

    Bytes of a character split across tokens are held until it is complete.
    Invalid bytes become U+FFFD, and so does an incomplete tail at flush().
    Space clean-up (clean_spaces vocabularies) is not applied while streaming,
    as in llama.cpp's per-token output.
    """

    def __init__(self, detok: Detokenizer, special: bool = True):
        self._detok = detok
        self._special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._first = True

    def add(self, token_id: int) -> str:
        piece = self._detok.piece(int(token_id), self._special)
        if self._first:
            self._first = False
            if self._detok.strip_first_space and piece.startswith(b" "):
                piece = piece[1:]
        return self._utf8.decode(piece)

    def flush(self) -> str:
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out
