"""What a generation reports (Stats, Completion, Step), and `Session`: one sequence's KV cache
fed in chunks, for scoring (logits, perplexity) and benchmarks. Generation itself runs in
the engine (`engine/`), for every caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .models.forward_pass import key_splits

PREFILL_CHUNK = 512


@dataclass
class Stats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the cache, not prefilled
    prefilled_tokens: int = 0
    time_to_first_token_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0  # tokens decoded after the first (one forward pass each, unless speculating)
    draft_tokens: int = 0  # speculative guesses verified
    accepted_tokens: int = 0  # guesses that were right
    draft_steps: int = 0  # decode steps that verified a guess

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefilled_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        # the first token comes out of prefill; decode is the forward passes after it
        return self.decode_steps / self.decode_s if self.decode_steps and self.decode_s > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def mean_draft_len(self) -> float:
        """Guesses per step that guessed: the draft length the governor chose, on average."""
        return self.draft_tokens / self.draft_steps if self.draft_steps else 0.0

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "time_to_first_token_s": self.time_to_first_token_s,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
        }


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" or "length"
    stats: Stats = field(default_factory=Stats)
    logprobs: list | None = None  # engine.TokenLogprob per generated token, when asked for


@dataclass
class Step:
    token_id: int | None  # None on a final step that only flushes text
    text: str  # text safe to show now (UTF-8 complete, stop strings removed)
    finish_reason: str | None = None


class Session:
    """A model plus one KV cache, reused across calls."""

    def __init__(self, model, n_ctx: int, kv_dtype: str = "f16", threads: int = 1):
        self.model = model
        self.cache = model.new_cache(n_ctx, kv_dtype)
        self.threads = threads

    @property
    def n_ctx(self) -> int:
        return self.cache.n_ctx

    def _split(self, n_new: int) -> int:
        return key_splits(n_new, self.cache.n_tokens, self.model.cfg.n_head_kv, self.threads)

    def feed(self, ids: Sequence[int], logits_rows=None, n_batch: int | None = None) -> np.ndarray:
        """Append ids to the cache in chunks of n_batch (default PREFILL_CHUNK); return logits of
        the asked rows (default: last). Every row has one arithmetic, so the logits are the
        same bits for any n_batch."""
        n_batch = n_batch or PREFILL_CHUNK
        out = None
        n = len(ids)
        # check the whole input up front: a failure in a later chunk must not leave earlier ones cached
        self.cache.check_room(n)
        self.model.check_tokens(ids)
        for s in range(0, n, n_batch):
            chunk = ids[s : s + n_batch]
            last = s + len(chunk) >= n
            if logits_rows is None:
                rows = [len(chunk) - 1] if last else []
            else:
                rows = [r - s for r in logits_rows if s <= r < s + len(chunk)]
            res = self.model.forward(chunk, self.cache, logits_rows=rows, n_split=self._split(len(chunk)))
            out = res if out is None else np.concatenate([out, res])
        return out

    def step(self, token: int) -> np.ndarray:
        """Logits (vocab,) after appending one token: the decode loop's short path."""
        return self.model.decode_one(int(token), self.cache, self._split(1))
