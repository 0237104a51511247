"""The public Tokenizer: built from GGUF metadata, behaves like llama.cpp's."""

from __future__ import annotations

from typing import Any, Sequence

from .bpe import BytePairEncoder
from .detok import Detokenizer, StreamDecoder
from .errors import UnsupportedTokenizer
from .pretokenize import pre_config
from .special import SpecialSplitter
from .spm import SentencePieceEncoder
from .vocab import Vocab, load_vocab


class Tokenizer:
    """Text <-> token ids for one GGUF vocabulary.

    encode(text, add_bos, special): `add_bos` prepends the BOS token (pass
    `tok.add_bos` to follow the model's own setting); `special` lets text such
    as "<|im_start|>" become its control token, otherwise it is plain text.
    User-defined tokens (Gemma's "\\n", "<html>", whitespace runs) are always
    matched, as in llama.cpp.
    """

    def __init__(self, vocab: Vocab, merges: list[str] | None = None):
        self._vocab = vocab
        if vocab.model == "gpt2":
            clean_spaces = pre_config(vocab.pre).clean_spaces
            self._model = BytePairEncoder(vocab, merges or [])
            self._space_prefix = False
        else:
            clean_spaces = False
            self._model = SentencePieceEncoder(vocab)
            self._space_prefix = vocab.add_space_prefix
        self._splitter = SpecialSplitter(vocab)
        self._detok = Detokenizer(vocab, byte_level=vocab.model == "gpt2", clean_spaces=clean_spaces)

    # -- properties -------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._vocab.size

    @property
    def bos_id(self) -> int | None:
        return self._vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self._vocab.eos_id

    @property
    def eot_id(self) -> int | None:
        return self._vocab.eot_id

    @property
    def add_bos(self) -> bool:
        return self._vocab.add_bos

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end generation: llama.cpp's end-of-generation set."""
        return self._vocab.eog_ids

    @property
    def model(self) -> str:
        return self._vocab.model

    def token_text(self, token_id: int) -> str:
        return self._vocab.tokens[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token adds to decoded text (a piece of a UTF-8 character, maybe)."""
        return self._detok.piece(token_id)

    def is_control(self, token_id: int) -> bool:
        return self._vocab.is_control(token_id)

    # -- encoding ---------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        out: list[int] = []
        if add_bos:
            if self._vocab.bos_id is None:
                raise ValueError("add_bos=True, but this vocabulary has no BOS token")
            out.append(self._vocab.bos_id)
        prev_special = True   # SentencePiece prefixes a space to text that starts a fragment run
        for frag in self._splitter.split(text, special):
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
                continue
            if self._space_prefix and prev_special:
                frag = " " + frag
            out.extend(self._model.encode(frag))
            prev_special = False
        return out

    # -- decoding ---------------------------------------------------------
    def decode(self, ids: Sequence[int], special: bool = True) -> str:
        """Text for ids; control tokens render as their text unless special=False."""
        return self._detok.decode(ids, special)

    def stream_decoder(self, special: bool = True) -> StreamDecoder:
        return StreamDecoder(self._detok, special)

    def vocabulary_difference(self, other: "Tokenizer") -> str | None:
        """Why other's token ids do not mean the same as this tokenizer's, or None if they do
        (a draft model must share the target's vocabulary)."""
        a, b = self._vocab, other._vocab
        if a.model != b.model:
            return f"tokenizer kinds differ ({a.model} vs {b.model})"
        if a.size != b.size:
            return f"vocabulary sizes differ ({a.size} vs {b.size} tokens)"
        for name in ("bos_id", "eos_id", "eot_id"):
            if getattr(a, name) != getattr(b, name):
                return f"{name} differs ({getattr(a, name)} vs {getattr(b, name)})"
        if a.eog_ids != b.eog_ids:
            return "end-of-generation tokens differ"
        if a.tokens != b.tokens:
            first = next(i for i, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x != y)
            return f"token {first} differs ({a.tokens[first]!r} vs {b.tokens[first]!r})"
        return None

    def __repr__(self) -> str:
        return f"Tokenizer(model={self._vocab.model!r}, pre={self._vocab.pre!r}, vocab_size={self.vocab_size})"


def tokenizer_from_metadata(md: dict[str, Any]) -> Tokenizer:
    """Build a Tokenizer from GGUF metadata (key -> plain Python value)."""
    vocab = load_vocab(md)
    merges = md.get("tokenizer.ggml.merges")
    if vocab.model == "gpt2" and not merges:
        raise UnsupportedTokenizer("byte-level BPE vocabulary without tokenizer.ggml.merges")
    return Tokenizer(vocab, merges)

