"""Byte-level BPE (tokenizer.ggml.model = gpt2), merge by rank like llama.cpp."""

from __future__ import annotations

from .bytelevel import encode_bytes
from .pretokenize import PreTokenizer
from .vocab import Vocab

_CACHE_LIMIT = 200_000


class BytePairEncoder:
    def __init__(self, vocab: Vocab, merges: list[str]):
        self.vocab = vocab
        self.pre = PreTokenizer(vocab.pre)
        self.ignore_merges = self.pre.config.ignore_merges
        ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            # llama.cpp splits at the first space after the first character,
            # so a left part may itself start with a space.
            cut = merge.find(" ", 1)
            if cut < 0:
                continue
            ranks.setdefault((merge[:cut], merge[cut + 1:]), rank)
        self.ranks = ranks
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> list[int]:
        """Token ids for one run of plain text (special tokens already split off)."""
        out: list[int] = []
        cache = self._cache
        for word in self.pre.split(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(encode_bytes(word))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        token_to_id = self.vocab.token_to_id
        if self.ignore_merges and word in token_to_id:
            return (token_to_id[word],)
        parts = self._merge(list(word))
        ids: list[int] = []
        for part in parts:
            token_id = token_to_id.get(part)
            if token_id is not None:
                ids.append(token_id)
                continue
            # No token for the merged piece: fall back to one token per byte;
            # llama.cpp silently drops bytes that have no token either.
            ids.extend(token_to_id[c] for c in part if c in token_to_id)
        return tuple(ids)

    def _merge(self, parts: list[str]) -> list[str]:
        """Merge the adjacent pair with the lowest rank, leftmost first, until none is left.

        One merge per step, as llama.cpp's priority queue does: merging every
        occurrence of a pair at once can give different results when a newer,
        lower-ranked pair overlaps a later occurrence.
        """
        ranks = self.ranks
        while len(parts) > 1:
            best_rank = None
            best_at = -1
            for i in range(len(parts) - 1):
                rank = ranks.get((parts[i], parts[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_at = rank, i
            if best_at < 0:
                break
            parts[best_at:best_at + 2] = [parts[best_at] + parts[best_at + 1]]
        return parts
