"""SentencePiece BPE (tokenizer.ggml.model = llama) through the sentencepiece package.

The GGUF vocabulary is turned into an in-memory ModelProto. Choices that make
sentencepiece behave like llama.cpp's own SPM tokenizer:

- Every piece except the unknown and byte pieces is typed NORMAL. llama.cpp
  lets any vocabulary entry (control and user-defined included) be the result
  of a merge, with its own score; sentencepiece would treat control pieces as
  unmergeable and user-defined ones as forced matches.
- The normalizer is identity, with no dummy prefix and no whitespace escaping:
  llama.cpp adds the prefix space per text fragment (after each special token)
  and escapes spaces to U+2581 itself, after special tokens were split out.
  User-defined whitespace-run pieces (stored with plain spaces) are matched in
  that earlier split, which sentencepiece cannot express since it escapes
  first.
"""

from __future__ import annotations

import sentencepiece

from .errors import UnsupportedTokenizer
from .spm_proto import SP_BYTE, SP_NORMAL, SP_UNKNOWN, model_proto
from .vocab import BYTE, UNKNOWN, Vocab

SPACE_MARK = "\u2581"


class SentencePieceEncoder:
    def __init__(self, vocab: Vocab):
        unk_id = vocab.unk_id
        if unk_id is None:
            unk_id = next((i for i, a in enumerate(vocab.attrs) if a & UNKNOWN), None)
        if unk_id is None:
            raise UnsupportedTokenizer("SentencePiece vocabulary has no unknown token")
        byte_ids = [vocab.token_to_id.get(f"<0x{b:02X}>") for b in range(256)]
        byte_fallback = all(i is not None and vocab.attrs[i] & BYTE for i in byte_ids)
        byte_set = set(byte_ids) if byte_fallback else set()
        pieces = []
        for i, (text, score) in enumerate(zip(vocab.tokens, vocab.scores)):
            kind = SP_UNKNOWN if i == unk_id else SP_BYTE if i in byte_set else SP_NORMAL
            pieces.append((text, score, kind))
        self._sp = sentencepiece.SentencePieceProcessor(
            model_proto=model_proto(pieces, unk_id, byte_fallback))
        if self._sp.get_piece_size() != vocab.size:
            raise UnsupportedTokenizer("sentencepiece rejected the vocabulary size")

    def encode(self, text: str) -> list[int]:
        """Token ids for one run of plain text, already space-prefixed if needed."""
        return self._sp.encode(text.replace(" ", SPACE_MARK))
