"""Continuous batching: which tokens of which requests go into the next forward step.

Each `schedule()` builds one step under a token budget:

1. running requests, oldest first: one token for each that is decoding, the
   next prefill chunk for each still prefilling (chunks never take the budget
   that later running decodes need, so a long prompt cannot stall streams);
2. then waiting requests, first come first served, while sequences, budget and
   KV blocks last. The head of the queue is never skipped.

The runner computes the step and calls `update()` with the sampled tokens.
When a running request needs a block and none is free, the newest running
request is preempted: its blocks are freed and it goes back to the front of
the queue, to recompute its prompt and outputs later (the prefix cache often
serves most of that). Running requests always arrived before waiting ones, so
"newest running" is simply the last of `running`.

Speculative decoding: a decoding request may carry `draft` tokens (guesses at
its next tokens). Its decode chunk is then the last known token plus the
draft, all computed in the step, and `update()` takes the tokens the runner
accepted plus the one it sampled after them; the KV slots of rejected
guesses go back (`BlockManager.truncate`). Drafts are placed after
every other token of the step is scheduled, so a guess never preempts anyone
or delays an admission: it shrinks to the budget and free blocks left, and to
max_tokens.

A request that could not finish even alone in the pool (a prompt longer than
the context window or the pool) is rejected at `add()`, so a lone
running request can always grow and the queue never deadlocks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import UsageError
from .block_manager import BlockManager
from .request import FINISH_REASONS, Request, RequestStatus

__all__ = ["Scheduler", "SchedulerStep", "ScheduledChunk"]


@dataclass
class ScheduledChunk:
    """Tokens `start .. start + len(token_ids)` of one request, to compute in this step."""

    request: Request
    start: int
    token_ids: list[int]
    sample: bool  # the chunk ends at the last known token: sample the next from its last row
    block_table: list[int]
    num_draft: int = 0  # the last num_draft token_ids are speculative: every one of them needs logits

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def draft(self) -> list[int]:
        return self.token_ids[len(self.token_ids) - self.num_draft:]

    @property
    def num_logit_rows(self) -> int:
        """Rows whose logits the step must return: the last one, and one per draft token."""
        return 1 + self.num_draft if self.sample else 0

    @property
    def end(self) -> int:
        return self.start + len(self.token_ids)


@dataclass
class SchedulerStep:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)  # (src, dst) blocks, copy before the step
    preempted: list[Request] = field(default_factory=list)
    finished: list[Request] = field(default_factory=list)  # since the last step, for the engine to report

    @property
    def num_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


class Scheduler:
    """Not thread-safe: one thread (the engine's) owns it."""

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 16,
                 max_num_batched_tokens: int = 512, n_ctx: int = 2048,
                 clock: Callable[[], float] = time.monotonic):
        if max_num_seqs < 1 or n_ctx < 2:
            raise UsageError(f"need max_num_seqs >= 1 and n_ctx >= 2, got {max_num_seqs}, {n_ctx}")
        if max_num_batched_tokens < max_num_seqs:
            # Otherwise some running streams could not get their token each step.
            raise UsageError(f"max_num_batched_tokens ({max_num_batched_tokens}) must be at least "
                             f"max_num_seqs ({max_num_seqs})")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.n_ctx = n_ctx
        self.clock = clock
        pool_tokens = block_manager.num_blocks * block_manager.block_size
        # The longest sequence that can exist: prompt + outputs never exceed it.
        self.max_seq_len = min(n_ctx, pool_tokens)

        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admission order, which is arrival order
        self._unfinished: dict[str, Request] = {}
        self._finished: list[Request] = []  # not yet handed out by schedule()

    # ---- queue ------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def get(self, request_id: str) -> Request | None:
        """The unfinished request with this id, if any."""
        return self._unfinished.get(request_id)

    def add(self, request: Request) -> None:
        """Queue a request, or finish it at once with reason "error" if it can never fit."""
        if request.request_id in self._unfinished:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        if request.arrival_time is None:
            request.arrival_time = self.clock()
        problem = self._why_never_fits(request)
        if problem is not None:
            request.error = problem
            self._mark_finished(request, "error")
            return
        # Outputs stop where the context (or the pool) ends; finishes as "length".
        # The last output is never fed back, so it needs no KV slot: prompt + outputs may reach
        # max_seq_len + 1 (llama.cpp's n_ctx counts the same way).
        request.max_tokens = min(request.max_tokens, self.max_seq_len - len(request.prompt_ids) + 1)
        request.status = RequestStatus.WAITING
        self.waiting.append(request)
        self._unfinished[request.request_id] = request

    def finish(self, request_id: str, reason: str, error: str | None = None) -> bool:
        """Finish a waiting or running request (e.g. a stop string matched); frees its blocks.

        `error` is the one-line message to keep when reason is "error".
        Idempotent: returns False if the request is unknown or already finished.
        """
        if reason not in FINISH_REASONS:
            raise ValueError(f"unknown finish reason {reason!r}")
        request = self._unfinished.get(request_id)
        if request is None:
            return False
        if error is not None:
            request.error = error
        self._finish(request, reason)
        return True

    def abort(self, request_id: str) -> bool:
        """Cancel a waiting or running request; idempotent."""
        return self.finish(request_id, "cancelled")

    def take_finished(self) -> list[Request]:
        """Requests finished since the last call (schedule() also hands them out)."""
        done, self._finished = self._finished, []
        return done

    # ---- one step ---------------------------------------------------------

    def schedule(self) -> SchedulerStep:
        step = SchedulerStep()
        budget = self.max_num_batched_tokens

        i = 0
        while i < len(self.running):
            request = self.running[i]
            remaining = request.num_uncomputed
            if remaining == 1:
                n = 1
            else:
                # Leave one token of budget for each later running decode. (FCFS
                # admission already puts prefilling requests after decoding
                # ones; this keeps fairness from resting on that alone.)
                later_decodes = sum(1 for r in self.running[i + 1:] if r.num_uncomputed == 1)
                n = min(remaining, budget - later_decodes)
                if n <= 0:
                    i += 1
                    continue
            if not self._make_room(request, n, step):
                continue  # it was the newest itself: back in the queue, and the loop is done
            step.copies += self._reserve(request, n)
            step.chunks.append(self._chunk(request, n))
            budget -= n
            i += 1

        # Admitting right after a preemption would only take back the blocks just freed.
        while not step.preempted and self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            request = self.waiting[0]
            if not self._admit(request, budget, step):
                break
            budget -= len(step.chunks[-1].token_ids)

        # Guesses last, from what every scheduled token left: the budget and the free blocks
        for chunk in step.chunks:
            request = chunk.request
            if request.draft and chunk.sample and len(chunk.token_ids) == 1:
                k = self._draft_room(request, budget)
                if k:
                    step.copies += self._reserve(request, 1 + k)
                    chunk.token_ids += request.draft[:k]
                    chunk.num_draft = k
                    chunk.block_table = self.block_manager.block_table(request.request_id)
                    budget -= k
        for request in self.running:
            request.draft = []
        step.finished = self.take_finished()
        return step

    def update(self, step: SchedulerStep, sampled: Mapping[str, int | Sequence[int]]) -> None:
        """Record a computed step: advance, commit cached blocks, append samples, finish.

        sampled[request_id] is the next token, or for a chunk with a draft the accepted
        draft tokens followed by the token sampled after them."""
        bm = self.block_manager
        for chunk in step.chunks:
            request = chunk.request
            rid = request.request_id
            if request.status is not RequestStatus.RUNNING or request.num_computed != chunk.start:
                continue  # finished or aborted after schedule(); its blocks are gone
            request.num_computed_total += len(chunk.token_ids)
            if not chunk.sample:
                request.num_computed = chunk.end
                bm.commit(rid, request.all_ids, request.num_computed)
                continue
            if rid not in sampled:
                raise ValueError(f"no sampled token for request {rid!r}")
            tokens = self._accepted(chunk, sampled[rid])
            # the KV of the last known token and of the accepted guesses is good; the rest goes
            request.num_computed = chunk.end - (chunk.num_draft - (len(tokens) - 1))
            if request.num_computed < chunk.end:
                bm.truncate(rid, request.num_computed)
            reason = None
            for token in tokens:
                request.output_ids.append(token)
                if token in request.stop_token_ids:
                    reason = "stop"
                elif len(request.output_ids) >= request.max_tokens or request.num_tokens > self.max_seq_len:
                    reason = "length"
                if reason:
                    break
            if request.first_token_time is None:
                request.first_token_time = self.clock()
            bm.commit(rid, request.all_ids, min(request.num_computed, request.num_tokens))
            if reason:
                self._finish(request, reason)

    # ---- internals --------------------------------------------------------

    def _why_never_fits(self, request: Request) -> str | None:
        n = len(request.prompt_ids)
        if n == 0:
            return "the prompt is empty"
        if request.max_tokens < 1:
            return f"max_tokens must be at least 1, got {request.max_tokens}"
        if n > self.n_ctx:
            return f"prompt has {n} tokens, more than the context window (n_ctx={self.n_ctx})"
        bm = self.block_manager
        if bm.blocks_needed(n) > bm.num_blocks:
            return (f"prompt has {n} tokens and needs {bm.blocks_needed(n)} KV blocks of "
                    f"{bm.block_size} tokens; the whole pool has {bm.num_blocks}")
        return None

    def _chunk(self, request: Request, n: int) -> ScheduledChunk:
        start = request.num_computed
        return ScheduledChunk(
            request=request,
            start=start,
            token_ids=request.all_ids[start:start + n],
            sample=start + n == request.num_tokens,
            block_table=self.block_manager.block_table(request.request_id),
        )

    def _draft_room(self, request: Request, budget: int) -> int:
        """How many of the request's draft tokens this step can verify (0 when none fit).
        max_tokens bounds it (each guess may become an output), and add() has already
        clipped max_tokens to the context window, so every guess has a KV slot."""
        k = min(len(request.draft), budget, request.max_tokens - len(request.output_ids) - 1)
        rid = request.request_id
        while k > 0 and not self.block_manager.can_append(
                rid, max(0, request.num_computed + 1 + k - self.block_manager.num_tokens(rid))):
            k -= 1  # a guess never takes blocks that would force a preemption
        return max(k, 0)

    @staticmethod
    def _accepted(chunk: ScheduledChunk, sampled: int | Sequence[int]) -> list[int]:
        tokens = [int(t) for t in sampled] if isinstance(sampled, Sequence) else [int(sampled)]
        draft = chunk.draft
        n_acc = len(tokens) - 1
        if not tokens or n_acc > chunk.num_draft or tokens[:n_acc] != draft[:n_acc]:
            raise ValueError(f"request {chunk.request.request_id!r}: {tokens} is not an accepted prefix of "
                             f"the draft {draft} plus one sampled token")
        return tokens

    def _reserve(self, request: Request, n: int) -> list[tuple[int, int]]:
        """Make the table cover num_computed + n tokens; returns copy-on-write copies."""
        bm = self.block_manager
        extra = request.num_computed + n - bm.num_tokens(request.request_id)
        return bm.append_slots(request.request_id, extra) if extra > 0 else []

    def _make_room(self, request: Request, n: int, step: SchedulerStep) -> bool:
        """Preempt newest-first until `request` can grow by n; False if it was preempted itself."""
        bm = self.block_manager
        rid = request.request_id
        while not bm.can_append(rid, max(0, request.num_computed + n - bm.num_tokens(rid))):
            victim = self.running[-1]
            if victim is request and len(self.running) == 1:
                # add() guarantees a lone request fits; reaching here is a bug.
                raise RuntimeError(f"request {rid!r} cannot grow even alone in the KV pool")
            self._preempt(victim, step)
            if victim is request:
                return False
        return True

    def _preempt(self, request: Request, step: SchedulerStep) -> None:
        self.block_manager.free(request.request_id)
        self.running.remove(request)
        request.num_computed = 0
        request.draft = []
        request.num_preemptions += 1
        request.status = RequestStatus.WAITING
        self.waiting.appendleft(request)  # older than everything waiting
        step.preempted.append(request)

    def _admit(self, request: Request, budget: int, step: SchedulerStep) -> bool:
        """Start the head of the queue with its first chunk; False (and no change) if blocks lack."""
        bm = self.block_manager
        rid = request.request_id
        cached = bm.allocate_prefix(rid, request.all_ids)
        n = min(request.num_tokens - cached, budget)
        if not bm.can_append(rid, n):
            bm.free(rid)  # hands back the cached blocks it just took; they stay cached
            return False
        self.waiting.popleft()
        request.status = RequestStatus.RUNNING
        request.num_computed = cached
        request.num_cached_prompt_tokens += cached
        if request.first_scheduled_time is None:
            request.first_scheduled_time = self.clock()
        self.running.append(request)
        step.copies += bm.append_slots(rid, n)
        step.chunks.append(self._chunk(request, n))
        return True

    def _finish(self, request: Request, reason: str) -> None:
        if request in self.running:
            self.running.remove(request)
        elif request.status is RequestStatus.WAITING and request in self.waiting:
            self.waiting.remove(request)
        if self.block_manager.has_seq(request.request_id):
            self.block_manager.free(request.request_id)
        self._unfinished.pop(request.request_id, None)
        self._mark_finished(request, reason)

    def _mark_finished(self, request: Request, reason: str) -> None:
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        request.finish_time = self.clock()
        self._finished.append(request)
