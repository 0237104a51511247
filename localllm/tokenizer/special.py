"""Split special-token text out of the input before the model tokenizer runs.

Follows llama.cpp's tokenizer_st_partition: special tokens are tried longest
first (by UTF-8 length; ties in id order, where llama.cpp's unstable sort
leaves the order open), and each one splits every remaining text fragment at
all of its non-overlapping occurrences. User-defined tokens are always split
out; control and unknown tokens only when special parsing is on.
"""

from __future__ import annotations

from .vocab import CONTROL, UNKNOWN, USER_DEFINED, Vocab

Fragment = str | int   # raw text, or a token id that is already decided


class SpecialSplitter:
    def __init__(self, vocab: Vocab):
        order = sorted(
            (i for i, a in enumerate(vocab.attrs) if a & (CONTROL | USER_DEFINED | UNKNOWN)),
            key=lambda i: -len(vocab.tokens[i].encode("utf-8")),
        )
        self._always = [(vocab.tokens[i], i) for i in order if not vocab.attrs[i] & (CONTROL | UNKNOWN)]
        self._all = [(vocab.tokens[i], i) for i in order]

    def split(self, text: str, parse_special: bool) -> list[Fragment]:
        if not text:
            return []
        fragments: list[Fragment] = [text]
        for piece, token_id in self._all if parse_special else self._always:
            # A fragment is a substring of text, so a piece absent from text is absent everywhere.
            if piece not in text:
                continue
            out: list[Fragment] = []
            for frag in fragments:
                if isinstance(frag, int) or piece not in frag:
                    out.append(frag)
                    continue
                for k, part in enumerate(frag.split(piece)):
                    if k:
                        out.append(token_id)
                    if part:
                        out.append(part)
            fragments = out
        return fragments
