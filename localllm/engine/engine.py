"""The engine: one thread that owns the model, the KV pool and the scheduler.

Callers on any thread `submit` a request and iterate its events, or `cancel`
it; `call` runs any other kernel work (scoring, perplexity) on the engine
thread between steps. Only the engine thread calls kernels: numba's thread
count is per thread (the engine sets its own), and two threads in the
parallel kernels at once would fight over the same cores.

Each step runs whatever the scheduler picked (decode tokens of every running
request, chunks of new prompts) as one forward pass, then samples each
request with its own seeded sampler, detokenizes and checks stop strings.
A request's tokens are therefore the same alone or with fifteen others.

With a speculative config, each decoding request may guess its next tokens
(`speculative.py`: prompt lookup, or a draft model run by `drafter.py` on this
thread); the step verifies them. Greedy and lookup-guessed tokens are the ones
plain decoding would have given; a sampled request with a draft model goes
through the rejection rule, which keeps the target's distribution exactly.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import LocalLLMError, UsageError
from ..generation import Stats, Step
from ..kv_cache import BLOCK_SIZE, block_bytes, blocks_for
from ..memory import format_bytes
from ..sampling import Sampler, SamplingParams, top_k_indices, without_padding
from ..speculative import DRAFT_PRIOR, Acceptance, Governor, PromptLookup, SpeculativeConfig, rejection_step
from ..stopping import StopChecker
from .block_manager import BlockManager
from .drafter import Draft, Drafter, DraftRequest
from .request import Request
from .runner import ModelRunner
from .scheduler import Scheduler

MAX_NUM_SEQS = 8  # default sequences decoded together
MAX_BATCHED_TOKENS = 512  # default tokens per step (a prefill chunk plus the decodes)


class RequestFailed(LocalLLMError):
    """A request was rejected (it can never fit) or the engine failed while running it."""


@dataclass
class TokenLogprob:
    """One generated token's log-probability under the model, and the top alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass
class Event:
    """What a request's consumer receives: a step of text, then one final event."""

    step: Step
    logprob: TokenLogprob | None = None
    stats: Stats | None = None  # on the final event
    error: str | None = None  # on the final event of a failed request
    time: float = field(default_factory=time.perf_counter)  # when the engine emitted it


@dataclass(frozen=True)
class EngineLoad:
    """A snapshot of the engine's occupancy, replaced after every step (safe to read anywhere)."""

    running: int = 0
    waiting: int = 0
    kv_blocks_used: int = 0  # blocks held by live sequences (cached-but-free ones do not count)
    kv_blocks_total: int = 0
    preemptions: int = 0


@dataclass
class _Live:
    """The engine thread's state for one request beyond what the scheduler keeps."""

    request: Request
    sampler: Sampler
    detok: object
    stopper: StopChecker
    events: "queue.Queue | EventSink"
    logprobs: int | None
    acceptance: Acceptance | None = None  # set when the request speculates
    lookup: PromptLookup | None = None  # its draft source with prompt lookup
    draft_sampler: Sampler | None = None  # its draft model's sampler (own generator)
    draft: Draft | None = None  # the draft model's guesses for the coming step
    text_done: bool = False
    t_submit: float = field(default_factory=time.perf_counter)
    t_first: float | None = None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = np.max(x)
    return x - (m + math.log(np.sum(np.exp(x - m))))


class EventSink:
    """Where a request's events go instead of a queue: `put(event)` is called on the engine
    thread, so it must be quick and must not raise (an asyncio bridge, for example)."""

    def put(self, event: Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class RequestHandle:
    """A submitted request: iterate `events()` (each once) or call `result()`-style helpers."""

    def __init__(self, engine: "Engine", request_id: str, events: queue.Queue):
        self.engine, self.request_id, self._events = engine, request_id, events

    def events(self) -> Iterator[Event]:
        while True:
            try:
                ev = self._events.get(timeout=1.0)
            except queue.Empty:
                self.engine._check_alive()
                continue
            yield ev
            if ev.stats is not None or ev.error is not None:
                return

    def cancel(self) -> None:
        self.engine.cancel(self.request_id)


class Engine:
    """Continuous batching over a paged KV pool for one model."""

    def __init__(self, model, tokenizer, n_ctx: int, threads: int, max_num_seqs: int = MAX_NUM_SEQS,
                 kv_cache_gb: float | None = None, kv_dtype: str = "f16",
                 max_num_batched_tokens: int = MAX_BATCHED_TOKENS, speculative: SpeculativeConfig | None = None,
                 draft_model=None):
        """draft_model: the model that guesses when speculative.method is "draft" (the caller
        checks that its vocabulary is the target's); its own KV pool holds max_num_seqs full
        contexts."""
        c = model.cfg
        if (draft_model is not None) != (speculative is not None and speculative.method == "draft"):
            raise UsageError("a draft model goes with speculative method 'draft', and that method needs one")
        per_block = block_bytes(c.n_layer, c.n_head_kv, c.head_dim, c.head_dim_v, kv_dtype)
        if kv_cache_gb is not None:
            n_blocks = int(kv_cache_gb * (1 << 30) // per_block)
            if n_blocks < 1:
                raise UsageError(f"kv_cache_gb={kv_cache_gb} holds no KV block ({format_bytes(per_block)} each)")
        else:  # room for max_num_seqs full contexts
            n_blocks = blocks_for(n_ctx) * max_num_seqs
        self.model, self.tokenizer, self.threads = model, tokenizer, threads
        self.kv_pool_bytes = n_blocks * per_block  # reported by the server and the CLI
        self.pool = model.new_pool(n_blocks, kv_dtype)  # refused up front when the machine lacks it
        self.block_manager = BlockManager(n_blocks, BLOCK_SIZE)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, max(max_num_batched_tokens, max_num_seqs),
                                   n_ctx)
        self.runner = ModelRunner(model, self.pool, threads)
        self.governor = (Governor(speculative.draft_max, speculative.adaptive) if speculative is not None
                         else None)
        self.drafter = (Drafter(draft_model, tokenizer.vocab_size, n_ctx, max_num_seqs, speculative.draft_max, threads,
                                kv_dtype) if draft_model is not None else None)
        self._live: dict[str, _Live] = {}
        self._inbox: queue.Queue = queue.Queue()
        self._wake = threading.Event()
        self._ids = itertools.count()
        self._closed = False
        self._failure: str | None = None  # why the engine thread stopped, if it did
        self.preemptions = 0  # requests preempted (and later recomputed) so far
        self.load = EngineLoad(kv_blocks_total=n_blocks)
        self._thread = threading.Thread(target=self._loop, name="localllm-engine", daemon=True)
        self._thread.start()

    # ---- any thread -----------------------------------------------------------

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, logprobs: int | None = None,
               ignore_eos: bool = False, sink: EventSink | None = None, speculate: bool = True) -> RequestHandle:
        """Queue a generation; its events arrive on the returned handle, or on sink when given
        (then the handle only cancels). ignore_eos: end tokens do not stop it (benchmarks run
        every sequence to max_tokens). speculate=False opts out of the engine's speculation."""
        if self._closed:
            raise RequestFailed(self._failure or "the engine is closed")
        rid = f"req-{next(self._ids)}"
        events = sink if sink is not None else queue.Queue()
        self._inbox.put(("add", rid, list(prompt_ids), params, logprobs, ignore_eos, speculate, events))
        self._wake.set()
        return RequestHandle(self, rid, events)

    def cancel(self, request_id: str) -> None:
        self._inbox.put(("cancel", request_id))
        self._wake.set()

    def call(self, fn: Callable, *args, **kwargs):
        """Run fn(*args, **kwargs) on the engine thread between steps; return its result."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        if self._closed:
            raise RequestFailed(self._failure or "the engine is closed")
        fut: Future = Future()
        self._inbox.put(("call", fut, fn, args, kwargs))
        self._wake.set()
        while True:
            try:
                return fut.result(timeout=1.0)
            except FutureTimeout:
                self._check_alive()

    def _check_alive(self) -> None:
        """From a waiting caller: if the thread died after our message went in, fail what waits."""
        if not self._thread.is_alive():
            self._failure = self._failure or "the engine stopped"
            self._closed = True
            self._fail_waiting()

    @property
    def alive(self) -> bool:
        """Whether requests can still run: not closed, and the thread has not died."""
        return not self._closed and self._thread.is_alive()

    @property
    def failure(self) -> str | None:
        """Why the engine thread stopped, if it failed."""
        return self._failure

    def close(self) -> None:
        self._closed = True
        self._inbox.put(("close",))
        self._wake.set()
        self._thread.join(timeout=30)

    # ---- the engine thread ----------------------------------------------------

    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as e:  # the thread is gone: nobody may wait on it forever
            self._failure = f"the engine stopped: {type(e).__name__}: {e}".splitlines()[0][:300]
            self._closed = True
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        for rid, live in list(self._live.items()):
            live.events.put(Event(Step(None, "", "error"), error=self._failure))
            del self._live[rid]
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if msg[0] == "call":
                msg[1].set_exception(RequestFailed(self._failure))
            elif msg[0] == "add":
                msg[-1].put(Event(Step(None, "", "error"), error=self._failure))

    def _run(self) -> None:
        numba.set_num_threads(self.threads)  # per thread in numba: the engine's own count
        # compile (or load) the kernels here, before the first request is timed
        self.model.forward([0], self.model.new_cache(BLOCK_SIZE, self.pool.dtype))
        if self.drafter is not None:
            self.drafter.warm_up()
        while True:
            if not self._drain_inbox():
                return
            self._publish_load()
            if not self.scheduler.has_unfinished():
                self._report_finished(self.scheduler.take_finished())
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                self._step()
            except Exception as e:  # a kernel or sampler failure ends the running requests, not the engine
                msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                for rid in list(self._live):
                    self.scheduler.finish(rid, "error", msg)
                self._report_finished(self.scheduler.take_finished())

    def _publish_load(self) -> None:
        bm = self.block_manager
        self.load = EngineLoad(self.scheduler.num_running, self.scheduler.num_waiting,
                               bm.num_blocks - bm.num_free_blocks, bm.num_blocks, self.preemptions)

    def _drain_inbox(self) -> bool:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return True
            kind = msg[0]
            if kind == "add":
                self._add(*msg[1:])
            elif kind == "cancel":
                self.scheduler.abort(msg[1])
            elif kind == "call":
                fut, fn, args, kwargs = msg[1:]
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as e:  # handed to the caller's thread
                    fut.set_exception(e)
            elif kind == "close":
                for rid in list(self._live):
                    self.scheduler.abort(rid)
                self._report_finished(self.scheduler.take_finished())
                return False

    def _add(self, rid: str, ids: list[int], params: SamplingParams, logprobs: int | None, ignore_eos: bool,
             speculate: bool, events) -> None:
        tok = self.tokenizer
        req = Request(rid, ids, params.max_tokens, frozenset() if ignore_eos else tok.stop_ids, params)
        live = _Live(req, Sampler(params, self.model.cfg.vocab_size), tok.stream_decoder(),
                     StopChecker(params.stop), events, logprobs)
        if self.governor is not None and speculate:
            if self.drafter is None:
                live.acceptance, live.lookup = Acceptance(), PromptLookup()
            else:  # its own generator: the request's stays the target's, draw for draw
                live.acceptance = Acceptance(DRAFT_PRIOR)
                live.draft_sampler = Sampler(params, self.drafter.model.cfg.vocab_size,
                                             np.random.default_rng(None if params.seed is None else [params.seed, 1]))
        self._live[rid] = live
        self.scheduler.add(req)

    def _step(self) -> None:
        if self.governor is not None:
            self._propose_drafts()
        step = self.scheduler.schedule()
        self.preemptions += len(step.preempted)
        if self.drafter is not None:
            for req in step.preempted:
                self.drafter.release(req.request_id)
        self._report_finished(step.finished)
        if step.is_empty:
            return
        t0 = time.perf_counter()
        rows = self.runner.execute(step.chunks, step.copies)
        if self.governor is not None:
            self.governor.record_step(step.num_tokens, time.perf_counter() - t0)
        if self.drafter is not None:
            self._prefill_drafts(step)
        sampled, logprobs, before = {}, {}, {}
        for chunk in step.chunks:
            if chunk.sample:
                rid = chunk.request.request_id
                sampled[rid], logprobs[rid] = self._verify(self._live[rid], chunk, rows[rid])
                before[rid] = len(chunk.request.output_ids)
        self.scheduler.update(step, sampled)
        for rid, tokens in sampled.items():
            live = self._live[rid]
            n_taken = len(live.request.output_ids) - before[rid]  # a stop or the length may cut the list
            for i, (token, lp) in enumerate(itertools.zip_longest(tokens[:n_taken], logprobs[rid][:n_taken])):
                self._emit_token(live, token, lp)
                if live.text_done:  # a stop string ended it: accepted guesses after it are not outputs
                    live.request.drop_outputs_from(before[rid] + i + 1)
                    break
        self._report_finished(self.scheduler.take_finished())

    def _verify(self, live: _Live, chunk, rows: np.ndarray) -> tuple[list[int], list]:
        """Sample the chunk's rows in order, stopping at the first token that is not the guess
        there: the accepted guesses and the token after them (just the next token without a
        draft). The same sampler calls, in the same order, as decoding one token at a time."""
        draft = chunk.draft
        dists = live.draft.distributions if live.draft is not None else None  # None: one-hot guesses
        live.draft = None
        history = live.request.all_ids
        tokens, lps = [], []
        for i, row in enumerate(rows):  # rows: (1 + num_draft, vocab)
            logits = without_padding(row, self.tokenizer.vocab_size)
            if dists is not None and i < len(draft):  # a guess drawn from the draft's distribution
                q_ids, q = live.sampler.distribution(logits, history)
                token = rejection_step(q_ids, q, *dists[i], draft[i], live.sampler.rng)
            else:
                token = live.sampler.sample(logits, history)
            tokens.append(token)
            if live.logprobs is not None:
                lps.append(self._logprob(logits, token, live.logprobs))
            if i == len(draft) or token != draft[i]:
                break
            history.append(token)
        if chunk.num_draft:
            live.acceptance.record(chunk.num_draft, len(tokens) - 1)
        return tokens, lps

    def _prefill_drafts(self, step) -> None:
        """Requests whose prompt the step finished: the draft model processes it too, before
        their first token (so it counts in time to first token, as the target's prefill does)."""
        prompts = {}
        for chunk in step.chunks:
            req = chunk.request
            live = self._live.get(req.request_id)
            if chunk.sample and not req.output_ids and live is not None and live.acceptance is not None:
                prompts[req.request_id] = req.all_ids
        if prompts:  # not timed for the governor: a one-time cost, not what a guess costs
            self.drafter.prefill(prompts)

    def _propose_drafts(self) -> None:
        """Give each speculating request that is about to decode the guess the governor pays for."""
        running = self.scheduler.running
        decoding = sum(1 for r in running if r.num_uncomputed == 1)
        rows = min(sum(r.num_uncomputed for r in running), self.scheduler.max_num_batched_tokens)
        wants: dict[str, DraftRequest] = {}
        first_rows, passes = 0, []  # the draft model's first pass and later passes, rows so far
        for req in running:
            live = self._live.get(req.request_id)
            if live is None or live.acceptance is None or live.acceptance.stopped or req.num_uncomputed != 1:
                continue
            if live.lookup is not None:
                guess = live.lookup.propose(req.all_ids, self.governor.draft_max)
                k = self.governor.choose(live.acceptance, rows, decoding, len(guess))
                req.draft = guess[:k]
            else:  # a guess may become an output, so the room left bounds it
                ids = req.all_ids
                # the steady state's catch-up (one or two tokens) is what the choice weighs: a new
                # request's first pass also prefills its prompt, a one-time cost of drafting at all
                catch_up = min(self.drafter.catch_up_len(req.request_id, ids), 2)
                room = req.max_tokens - len(req.output_ids) - 1
                k = self.governor.choose(
                    live.acceptance, rows, decoding, room,
                    lambda k: self.governor.draft_seconds(k, catch_up, first_rows, passes))
                if not k:  # off for good (a draft model is not probed): its cache can go
                    live.acceptance.stopped = True
                    self.drafter.release(req.request_id)
                else:
                    wants[req.request_id] = DraftRequest(ids, k, live.draft_sampler)
                    first_rows += catch_up
                    passes += [0] * (k - 1 - len(passes))
                    for j in range(k - 1):
                        passes[j] += 1
            rows += k
        if wants:
            drafts = self.drafter.propose(wants, self.governor.record_draft_step)
            for rid, draft in drafts.items():
                self._live[rid].draft = draft
                self.scheduler.get(rid).draft = list(draft.tokens)

    @staticmethod
    def _logprob(logits: np.ndarray, token: int, n_top: int) -> TokenLogprob:
        lp = log_softmax(logits)
        # the n_top largest, most likely first, ties by token id: a stable sort of the full row's
        # order, but sorting only top_k_indices' candidates (a 262k-entry argsort is ~37 ms)
        top = np.sort(top_k_indices(lp, n_top)) if n_top > 0 else np.zeros(0, np.int64)
        top = top[np.argsort(-lp[top], kind="stable")]
        return TokenLogprob(int(token), float(lp[token]), [(int(t), float(lp[t])) for t in top])

    def _emit_token(self, live: _Live, token: int, logprob: TokenLogprob | None) -> None:
        if live.t_first is None:
            live.t_first = time.perf_counter()
        if token in live.request.stop_token_ids or live.text_done:
            return  # an end token is not part of the answer
        text, stopped = live.stopper.push(live.detok.add(token))
        if stopped:
            live.text_done = True
            self.scheduler.finish(live.request.request_id, "stop")
        live.events.put(Event(Step(token, text), logprob))

    def _report_finished(self, finished: list[Request]) -> None:
        self._publish_load()  # before the final events: a caller that sees one sees the blocks back
        for req in finished:
            live = self._live.get(req.request_id)
            if live is not None:
                self._finish_live(live, req.finish_reason, self._stats(live), req.error)

    def _finish_live(self, live: _Live, reason: str, stats: Stats, error: str | None = None) -> None:
        del self._live[live.request.request_id]
        if self.drafter is not None:
            self.drafter.release(live.request.request_id)
        tail = ""
        if not live.text_done:
            tail, stopped = live.stopper.push(live.detok.flush())
            tail += "" if stopped else live.stopper.flush()
            reason = "stop" if stopped else reason
        if error is not None:
            live.events.put(Event(Step(None, tail, "error"), error=error))
            return
        live.events.put(Event(Step(None, tail, reason), stats=stats))

    @staticmethod
    def _stats(live: _Live) -> Stats:
        req = live.request
        n_out = len(req.output_ids)
        if n_out and req.output_ids[-1] in req.stop_token_ids:
            n_out -= 1
        now = time.perf_counter()
        s = Stats(prompt_tokens=len(req.prompt_ids), completion_tokens=n_out,
                  cached_tokens=req.num_cached_prompt_tokens)
        s.prefilled_tokens = len(req.prompt_ids) - req.num_cached_prompt_tokens
        if live.t_first is not None:
            s.time_to_first_token_s = s.prefill_s = live.t_first - live.t_submit
            s.decode_s = now - live.t_first
            s.decode_steps = max(0, len(req.output_ids) - 1)
        if live.acceptance is not None:
            a = live.acceptance
            s.draft_tokens, s.accepted_tokens, s.draft_steps = a.drafted_total, a.accepted_total, a.steps
        return s
