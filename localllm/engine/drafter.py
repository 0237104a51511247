"""A draft model for speculative decoding: a smaller model with the target's vocabulary.

The drafter lives on the engine thread next to the target. It has its own KV
pool and `BlockManager` (with prefix caching), and keeps one sequence per
speculating request. `propose` drafts k tokens for several requests at once:
the first forward pass catches each request's draft cache up with the tokens
the target has accepted since (usually one or two), then one pass per guessed
token, every request in lockstep. Each guess is the draft's argmax for a greedy
request, or a draw from the draft's distribution (returned with it, for the
rejection rule) for a sampled one.

Rollback needs no bookkeeping from the engine: each sequence remembers the
tokens its KV holds, and the next `propose` keeps the longest prefix shared
with the request's tokens and recomputes from there. A request's tokens only
grow, so the part known to be its own at the last call is not compared again:
each step looks at the last few tokens, not the whole context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..kv_cache import BLOCK_SIZE, blocks_for
from ..sampling import Sampler, draw, without_padding
from .block_manager import BlockManager
from .runner import ModelRunner

CATCH_UP_CHUNK = 512  # most tokens of one sequence per catch-up pass (a new request's whole prompt)


@dataclass
class DraftChunk:
    """Tokens start .. end of one draft sequence, for ModelRunner.execute."""

    request_id: str
    start: int
    token_ids: list[int]
    block_table: list[int]
    num_logit_rows: int = 1

    @property
    def end(self) -> int:
        return self.start + len(self.token_ids)


@dataclass
class _Sequence:
    """One request's draft sequence: the tokens whose KV it holds, of which the first `own`
    are known to be the request's (its guesses may follow)."""

    held: list[int]
    own: int

    def shared_with(self, ids: list[int]) -> int:
        """Tokens of held that ids starts with, leaving ids' last token out (its logits are
        needed). ids extends the request's tokens, so the first `own` need no comparing."""
        n = min(self.own, len(ids) - 1)
        for a, b in zip(self.held[n:], ids[n:-1]):
            if a != b:
                break
            n += 1
        return n


@dataclass
class DraftRequest:
    """What to draft for one request: its known tokens, how many guesses, and its draft sampler
    (the request's sampling params with a generator of its own)."""

    ids: list[int]
    k: int
    sampler: Sampler


@dataclass
class Draft:
    """Guessed tokens, and for a sampled request the draft distribution each was drawn from
    (token ids, probabilities); None for argmax guesses."""

    tokens: list[int] = field(default_factory=list)
    distributions: list[tuple[np.ndarray, np.ndarray]] | None = None


class Drafter:
    """A draft model, its KV pool and its sequences (one per speculating request)."""

    def __init__(self, model, vocab_size: int, n_ctx: int, max_num_seqs: int, draft_max: int, threads: int,
                 kv_dtype: str = "f16"):
        n_blocks = blocks_for(n_ctx + draft_max) * max_num_seqs  # every running sequence at full length
        self.model, self.vocab_size = model, vocab_size
        self.pool = model.new_pool(n_blocks, kv_dtype)
        self.block_manager = BlockManager(n_blocks, BLOCK_SIZE)
        self.runner = ModelRunner(model, self.pool, threads)
        self._seqs: dict[str, _Sequence] = {}  # request id -> its draft sequence

    def warm_up(self) -> None:
        """Compile (or load) the draft model's kernels now, not inside the first request."""
        self.model.forward([0], self.model.new_cache(BLOCK_SIZE, self.pool.dtype))

    def release(self, request_id: str) -> None:
        """Forget a request (finished, cancelled or preempted); its blocks go back."""
        if self._seqs.pop(request_id, None) is not None:
            self.block_manager.free(request_id)

    def catch_up_len(self, request_id: str, ids: list[int]) -> int:
        """How many tokens the next propose for this request feeds before its first guess."""
        seq = self._seqs.get(request_id)
        if seq is None:
            return len(ids) - self.block_manager.cached_prefix_len(ids)
        return len(ids) - seq.shared_with(ids)

    def prefill(self, prompts: Mapping[str, list[int]], on_step: Callable[[int, float], None] | None = None) -> None:
        """Put each request's tokens (its prompt, once the target has prefilled it) in the draft
        cache now, so the first guesses only feed the newest token: the draft's prompt
        processing then belongs to the request's prefill, as the target's does."""
        chunks = [c for rid, ids in prompts.items() if (c := self._catch_up(rid, ids, logits=False)) is not None]
        while chunks:
            self._run_pass(chunks, on_step)
            chunks = [p for c in chunks if c.end < len(prompts[c.request_id])
                      and (p := self._piece(c.request_id, prompts[c.request_id], c.end, logits=False)) is not None]
        for rid, ids in prompts.items():
            seq = self._seqs.get(rid)
            if seq is not None:  # full blocks of a prompt can serve later requests that share it
                seq.own = len(ids)
                self.block_manager.commit(rid, ids, len(ids))

    def propose(self, wants: Mapping[str, DraftRequest],
                on_step: Callable[[int, float], None] | None = None) -> dict[str, Draft]:
        """Draft wants[rid].k tokens after wants[rid].ids for every request; on_step(rows, seconds)
        is told each forward pass's cost. A request whose sequence cannot get KV blocks gets no
        guesses (that only happens if the pool is smaller than its requests)."""
        drafts = {rid: Draft(distributions=None if w.sampler.params.temperature == 0 else [])
                  for rid, w in wants.items()}
        chunks = [c for rid, w in wants.items() if (c := self._catch_up(rid, w.ids)) is not None]
        while chunks:
            rows = self._run_pass(chunks, on_step)
            chunks = self._next_chunks(chunks, rows, wants, drafts)
        for rid, w in wants.items():
            seq = self._seqs.get(rid)
            if seq is not None:  # blocks of the request's own tokens can serve later requests
                seq.own = min(len(seq.held), len(w.ids))
                self.block_manager.commit(rid, w.ids, seq.own)
        return drafts

    def _run_pass(self, chunks: list[DraftChunk], on_step) -> dict[str, np.ndarray]:
        """One forward pass of the draft model over the chunks; their tokens become held."""
        copies = []
        for c in chunks:
            copies += self.block_manager.append_slots(c.request_id, len(c.token_ids))
            c.block_table = self.block_manager.block_table(c.request_id)
        t0 = time.perf_counter()
        rows = self.runner.execute(chunks, copies)
        if on_step is not None:
            on_step(sum(len(c.token_ids) for c in chunks), time.perf_counter() - t0)
        for c in chunks:
            self._seqs[c.request_id].held += c.token_ids
        return rows

    def _catch_up(self, rid: str, ids: list[int], logits: bool = True) -> DraftChunk | None:
        """The first chunk for a request: its tokens after the longest prefix the draft cache
        shares with them (always at least the last one, whose logits give the first guess)."""
        bm = self.block_manager
        seq = self._seqs.get(rid)
        if seq is None:
            bm.allocate_prefix(rid, ids)
            n = bm.num_tokens(rid)
            seq = self._seqs[rid] = _Sequence(ids[:n], n)
        keep = seq.shared_with(ids)
        bm.truncate(rid, keep)
        del seq.held[keep:]
        return self._piece(rid, ids, keep, logits)

    def _piece(self, rid: str, ids: list[int], start: int, logits: bool = True) -> DraftChunk | None:
        """ids[start:] as the next chunk, at most CATCH_UP_CHUNK tokens; only the last piece
        asks for logits (when logits is set). None (and the request forgotten) if the pool
        cannot hold it."""
        feed = ids[start : start + CATCH_UP_CHUNK]
        if not self.block_manager.can_append(rid, len(feed)):
            self.release(rid)
            return None
        last = start + len(feed) == len(ids)
        return DraftChunk(rid, start, feed, [], 1 if last and logits else 0)

    def _next_chunks(self, chunks: list[DraftChunk], rows: dict[str, np.ndarray],
                     wants: Mapping[str, DraftRequest], drafts: dict[str, Draft]) -> list[DraftChunk]:
        """Record what the pass computed; return the chunks of the next pass."""
        nxt = []
        for c in chunks:
            rid, w, d = c.request_id, wants[c.request_id], drafts[c.request_id]
            if c.num_logit_rows == 0:  # a long catch-up, continued
                piece = self._piece(rid, w.ids, c.end)
                if piece is not None:
                    nxt.append(piece)
                continue
            history = w.ids + d.tokens
            ids, probs = w.sampler.distribution(without_padding(rows[rid][-1], self.vocab_size), history)
            if d.distributions is None:
                token = int(ids[0])  # greedy: the argmax, a one-hot guess
            else:
                token = draw(ids, probs, w.sampler.rng)
                d.distributions.append((ids, probs))
            d.tokens.append(token)
            if len(d.tokens) < w.k and self.block_manager.can_append(rid, 1):
                nxt.append(DraftChunk(rid, c.end, [token], []))
        return nxt

