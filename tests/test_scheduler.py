"""Scheduler with a fake runner that owns a fake KV pool.

The fake runner writes, for every scheduled token, a hash of the whole token
history up to it into that token's pool slot (through the chunk's block
table, after the step's copies), then reads back every earlier slot of each
chunk's sequence. Real KV depends on the whole history too, so a wrong block
table, a missed copy-on-write, a bad prefix hit or a block reused while still
held all show up as a mismatch. Its "model" samples a token from the history
hash, so outputs are a pure function of each request's own tokens: any
scheduling that computes the right KV gives the same outputs as running alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from localllm.engine import BlockManager, Request, RequestStatus, Scheduler, SchedulerStep
from localllm.errors import UsageError

VOCAB = 48
STOP = 0  # a stop token for requests that ask for it; the fake model emits it ~2% of the time
_MOD = (1 << 61) - 1


def history_hashes(ids: list[int]) -> list[int]:
    out, h = [], 0
    for t in ids:
        h = (h * 1_000_003 + t + 1) % _MOD
        out.append(h)
    return out


def next_token(history_hash: int) -> int:
    return (history_hash >> 11) % VOCAB


class FakeRunner:
    def __init__(self, bm: BlockManager):
        self.bs = bm.block_size
        self.rows: list[int | None] = [None] * (bm.num_blocks * bm.block_size)

    def _slot(self, table: list[int], pos: int) -> int:
        return table[pos // self.bs] * self.bs + pos % self.bs

    def run(self, step: SchedulerStep) -> dict[str, int]:
        bs = self.bs
        for src, dst in step.copies:
            self.rows[dst * bs:(dst + 1) * bs] = self.rows[src * bs:(src + 1) * bs]
        seen = set()
        hashes = {}
        for c in step.chunks:
            r = c.request
            assert r.request_id not in seen, "a request scheduled twice in one step"
            seen.add(r.request_id)
            assert c.start == r.num_computed and c.token_ids == r.all_ids[c.start:c.end]
            assert c.sample == (c.end == r.num_tokens) and len(c.token_ids) >= 1
            h = hashes[r.request_id] = history_hashes(r.all_ids[:c.end])
            for pos in range(c.start, c.end):
                self.rows[self._slot(c.block_table, pos)] = h[pos]
        sampled = {}
        for c in step.chunks:  # attention reads the whole history, after every write of the step
            h = hashes[c.request.request_id]
            for pos in range(c.end):
                assert self.rows[self._slot(c.block_table, pos)] == h[pos], (c.request.request_id, pos)
            if c.sample:
                sampled[c.request.request_id] = next_token(h[-1])
        return sampled


class StepClock:
    """Time is the step number, so stats can be checked exactly."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Spec:
    rid: str
    prompt: tuple[int, ...]
    max_tokens: int
    stop: bool = True

    def request(self) -> Request:
        return Request(self.rid, list(self.prompt), self.max_tokens,
                       stop_token_ids=frozenset({STOP}) if self.stop else frozenset())


def mixed_specs(n: int, seed: int, max_prompt: int = 200, max_out: int = 30) -> list[Spec]:
    rng = random.Random(seed)
    return [Spec(f"r{i}", tuple(rng.randrange(1, VOCAB) for _ in range(rng.randint(1, max_prompt))),
                 rng.randint(1, max_out)) for i in range(n)]


class Harness:
    def __init__(self, num_blocks=512, block_size=16, prefix_caching=True, **sched_kw):
        self.bm = BlockManager(num_blocks, block_size, enable_prefix_caching=prefix_caching)
        self.clock = StepClock()
        self.sched = Scheduler(self.bm, clock=self.clock, **sched_kw)
        self.runner = FakeRunner(self.bm)
        self.steps: list[SchedulerStep] = []
        self.reported: list[Request] = []

    def step(self) -> SchedulerStep:
        s = self.sched
        decoding = [r for r in s.running if r.num_uncomputed == 1]
        arrival = {r.request_id: i for i, r in enumerate(list(s.running) + list(s.waiting))}
        step = s.schedule()
        self.reported += step.finished
        assert step.num_tokens <= s.max_num_batched_tokens
        assert len(s.running) <= s.max_num_seqs
        scheduled = {c.request.request_id for c in step.chunks}
        preempted = {r.request_id for r in step.preempted}
        for r in decoding:  # fairness: every running stream gets its token, unless preempted
            assert r.request_id in scheduled or r.request_id in preempted, r.request_id
        for victim in step.preempted:  # only the newest are preempted
            assert all(arrival[r.request_id] < arrival[victim.request_id] for r in s.running)
        self.steps.append(step)
        s.update(step, self.runner.run(step))
        self.bm.check_invariants()
        self.clock.now += 1
        return step

    def run(self, arrivals: dict[int, list[Request]] | None = None, limit: int = 5000) -> None:
        arrivals = dict(arrivals or {})
        n = 0
        while self.sched.has_unfinished() or arrivals:
            for r in arrivals.pop(n, []):
                self.sched.add(r)
            self.step()
            n += 1
            assert n < limit, "no progress"
        self.reported += self.sched.schedule().finished  # the last step's finishers
        assert self.bm.num_free_blocks == self.bm.num_blocks  # every block came back


_alone_cache: dict[Spec, tuple[list[int], str]] = {}


def alone(spec: Spec) -> tuple[list[int], str]:
    """Outputs and finish reason of the request run by itself in a roomy pool."""
    if spec not in _alone_cache:
        h = Harness()
        r = spec.request()
        h.sched.add(r)
        h.run()
        _alone_cache[spec] = (r.output_ids, r.finish_reason)
    return _alone_cache[spec]


def outcome(r: Request) -> tuple[list[int], str]:
    return r.output_ids, r.finish_reason


def test_batched_equals_alone():
    specs = mixed_specs(16, seed=1)
    h = Harness(num_blocks=512, block_size=16, max_num_seqs=16, max_num_batched_tokens=256)
    reqs = [s.request() for s in specs]
    for r in reqs:
        h.sched.add(r)
    h.run()
    assert max(len(st.chunks) for st in h.steps) >= 12  # they really shared steps
    for s, r in zip(specs, reqs):
        assert outcome(r) == alone(s), s.rid
        assert r.num_computed_total == r.num_tokens - 1  # nothing recomputed, nothing skipped
    reasons = {r.finish_reason for r in reqs}
    assert reasons == {"stop", "length"}
    assert sorted(r.request_id for r in h.reported) == sorted(s.rid for s in specs)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_tiny_pool_preempts_and_recomputes_identically(prefix_caching):
    specs = mixed_specs(16, seed=2)
    # 16 blocks of 16 tokens: any one request fits (<= 230 tokens), a few at a time do not.
    h = Harness(num_blocks=16, block_size=16, prefix_caching=prefix_caching,
                max_num_seqs=16, max_num_batched_tokens=128)
    reqs = [s.request() for s in specs]
    for r in reqs:
        h.sched.add(r)
    h.run()
    assert sum(r.num_preemptions for r in reqs) > 0
    assert any(st.preempted for st in h.steps)
    for s, r in zip(specs, reqs):
        assert outcome(r) == alone(s), s.rid
    recomputed = sum(r.num_computed_total - (r.num_tokens - 1) for r in reqs)
    assert recomputed > 0  # preemption cost real work (minus what the prefix cache saved)


def test_budget_and_fairness_with_chunked_prefill_beside_decodes():
    rng = random.Random(3)
    short = [Spec(f"s{i}", tuple(rng.randrange(1, VOCAB) for _ in range(5)), 60, stop=False)
             for i in range(4)]
    long = Spec("long", tuple(rng.randrange(1, VOCAB) for _ in range(300)), 5, stop=False)
    h = Harness(max_num_seqs=8, max_num_batched_tokens=24)
    reqs = {s.rid: s.request() for s in short}
    for r in reqs.values():
        h.sched.add(r)
    for _ in range(3):
        h.step()
    reqs["long"] = long.request()
    h.sched.add(reqs["long"])  # joins while the short ones decode
    h.run()
    mixed = [st for st in h.steps
             if any(len(c.token_ids) > 1 for c in st.chunks) and any(len(c.token_ids) == 1 for c in st.chunks)]
    assert len(mixed) >= 300 // 24  # the long prompt went in chunks beside the streams
    assert all(st.num_tokens <= 24 for st in h.steps)
    assert max(st.num_tokens for st in h.steps) == 24  # the budget was used, not wasted
    for s in short + [long]:
        assert outcome(reqs[s.rid]) == alone(s)
    # Each short stream got a token every step from its first token to its last.
    for s in short:
        st = reqs[s.rid].stats()
        assert st.time_per_output_token == 1.0


def test_requests_join_and_leave_mid_run():
    specs = mixed_specs(12, seed=4, max_prompt=120, max_out=25)
    h = Harness(num_blocks=64, block_size=16, max_num_seqs=5, max_num_batched_tokens=64)
    reqs = [s.request() for s in specs]
    arrivals = {3 * i: [r] for i, r in enumerate(reqs)}
    running_at_join = []
    orig_add = h.sched.add

    def add(r):
        running_at_join.append(h.sched.num_running)
        orig_add(r)

    h.sched.add = add
    h.run(arrivals)
    assert max(running_at_join) > 0  # some joined a running batch
    assert any(st.finished and st.chunks for st in h.steps)  # some left while others kept running
    for s, r in zip(specs, reqs):
        assert outcome(r) == alone(s), s.rid


def test_cancel_waiting_and_running_frees_their_blocks():
    specs = mixed_specs(6, seed=5, max_prompt=80, max_out=40)
    specs = [Spec(s.rid, s.prompt, 40, stop=False) for s in specs]
    h = Harness(num_blocks=64, block_size=16, max_num_seqs=2, max_num_batched_tokens=64)
    reqs = {s.rid: s.request() for s in specs}
    for r in reqs.values():
        h.sched.add(r)
    for _ in range(4):
        h.step()
    running = h.sched.running[0]
    waiting = h.sched.waiting[-1]
    assert h.bm.has_seq(running.request_id) and not h.bm.has_seq(waiting.request_id)
    free_before = h.bm.num_free_blocks
    held = len(h.bm.block_table(running.request_id))
    assert h.sched.abort(running.request_id) and h.sched.abort(waiting.request_id)
    assert not h.sched.abort(running.request_id)  # idempotent
    assert not h.sched.finish(waiting.request_id, "stop")
    assert h.bm.num_free_blocks == free_before + held and not h.bm.has_seq(running.request_id)
    h.bm.check_invariants()
    for r in (running, waiting):
        assert r.status is RequestStatus.FINISHED and r.finish_reason == "cancelled"
    assert waiting.output_ids == [] and waiting not in h.sched.waiting

    # Cancelled between schedule() and update(): the step's result for it is dropped.
    step = h.sched.schedule()
    h.reported += step.finished
    victim = step.chunks[0].request
    sampled = h.runner.run(step)
    h.sched.abort(victim.request_id)
    n_out = len(victim.output_ids)
    h.sched.update(step, sampled)
    assert len(victim.output_ids) == n_out and not h.bm.has_seq(victim.request_id)
    h.clock.now += 1
    h.run()

    cancelled = {running.request_id, waiting.request_id, victim.request_id}
    ids = [r.request_id for r in h.reported]
    assert sorted(ids) == sorted(reqs) and len(ids) == len(set(ids))  # each reported once
    for s in specs:
        r = reqs[s.rid]
        if s.rid in cancelled:
            assert r.finish_reason == "cancelled"
            assert r.output_ids == alone(s)[0][:len(r.output_ids)]
        else:
            assert outcome(r) == alone(s)


def test_finish_from_the_engine_stops_a_running_request():
    spec = Spec("a", tuple(range(1, 20)), 50, stop=False)
    h = Harness()
    r = spec.request()
    h.sched.add(r)
    for _ in range(5):
        h.step()
    assert h.sched.finish("a", "stop")  # a stop string matched in the text
    assert r.finish_reason == "stop" and len(r.output_ids) == 5 and not h.sched.has_unfinished()
    with pytest.raises(ValueError):
        h.sched.finish("a", "bored")
    h.run()
    assert h.reported == [r]

    # The engine fails a request (say its logits went NaN) with a message.
    r2 = Request("b", [1, 2, 3], 10)
    h.sched.add(r2)
    h.step()
    assert h.sched.finish("b", "error", error="logits are not finite")
    assert r2.finish_reason == "error" and r2.error == "logits are not finite"
    h.run()
    assert h.reported == [r, r2]


def test_requests_that_can_never_fit_are_rejected_while_others_finish():
    # n_ctx 512, but the pool holds only 16 x 16 = 256 tokens.
    h = Harness(num_blocks=16, block_size=16, n_ctx=512, max_num_seqs=4, max_num_batched_tokens=128)
    rng = random.Random(6)

    def prompt(n):
        return tuple(rng.randrange(1, VOCAB) for _ in range(n))

    too_long = Request("ctx", list(prompt(513)), 10)
    too_big = Request("pool", list(prompt(300)), 10)
    empty = Request("empty", [], 10)
    no_tokens = Request("zero", list(prompt(5)), 0)
    good = [Spec(f"ok{i}", prompt(40 + 30 * i), 20) for i in range(3)]
    edge = Spec("edge", prompt(256), 50, stop=False)  # fills the pool: one output token, never fed
    reqs = [too_long, good[0].request(), too_big, good[1].request(), empty, no_tokens,
            good[2].request(), edge.request()]
    for r in reqs:
        h.sched.add(r)
    assert h.sched.num_waiting == 4
    for r in (too_long, too_big, empty, no_tokens):
        assert r.status is RequestStatus.FINISHED and r.finish_reason == "error"
        assert r.error and "\n" not in r.error
    assert "n_ctx=512" in too_long.error and "pool" in too_big.error
    assert "empty" in empty.error and "max_tokens" in no_tokens.error
    first = h.step()
    assert {r.request_id for r in first.finished} == {"ctx", "pool", "empty", "zero"}
    h.run()
    for s, r in zip(good, [reqs[1], reqs[3], reqs[6]]):
        assert outcome(r) == alone(s)
    # The pool caps the edge request at one output token, the first one it gives alone.
    assert outcome(reqs[7]) == (alone(edge)[0][:1], "length")


def test_max_tokens_is_clipped_to_the_context_window():
    h = Harness(n_ctx=64)
    r = Request("a", list(range(1, 61)), 100)
    h.sched.add(r)
    h.run()
    assert r.max_tokens == 5 and len(r.output_ids) == 5  # the fifth is never fed: 64 KV slots
    assert r.finish_reason == "length" and r.num_tokens == 65


@pytest.mark.parametrize("when", ["after", "during"])
def test_shared_prefix_is_computed_once(when):
    rng = random.Random(7)
    prefix = tuple(rng.randrange(1, VOCAB) for _ in range(400))  # 25 blocks of 16
    a = Spec("a", prefix + tuple(rng.randrange(1, VOCAB) for _ in range(20)), 12, stop=False)
    b = Spec("b", prefix + tuple(rng.randrange(1, VOCAB) for _ in range(30)), 12, stop=False)
    h = Harness(num_blocks=128, block_size=16, max_num_batched_tokens=512)
    ra, rb = a.request(), b.request()
    h.sched.add(ra)
    if when == "after":
        h.run()
    else:
        h.step()  # a's whole prompt in one step; its blocks are committed now
        assert ra.status is RequestStatus.RUNNING
    h.sched.add(rb)
    h.run()
    assert ra.num_cached_prompt_tokens == 0 and ra.num_computed_total == ra.num_tokens - 1
    assert rb.num_cached_prompt_tokens == 400
    assert rb.num_computed_total == rb.num_tokens - 1 - 400  # only the suffix and its decodes
    assert next(c for st in h.steps for c in st.chunks if c.request is rb).start == 400
    assert outcome(ra) == alone(a) and outcome(rb) == alone(b)


def test_chunk_boundaries_do_not_change_outputs():
    specs = mixed_specs(6, seed=8, max_prompt=150)
    results = {}
    for budget in (16, 23, 64, 512):
        h = Harness(max_num_seqs=6, max_num_batched_tokens=budget)
        reqs = [s.request() for s in specs]
        for r in reqs:
            h.sched.add(r)
        h.run()
        results[budget] = [outcome(r) for r in reqs]
        n_chunks = sum(1 for st in h.steps for c in st.chunks if not c.sample)
        if budget < 150:
            assert n_chunks > 0  # some prompt really was cut
    assert results[16] == results[23] == results[64] == results[512]
    assert results[512] == [alone(s) for s in specs]


def test_stats_are_filled_in():
    specs = [Spec(f"r{i}", tuple(range(1, 30 + i)), 8, stop=False) for i in range(4)]
    h = Harness(max_num_seqs=2, max_num_batched_tokens=64)
    reqs = [s.request() for s in specs]
    for r in reqs:
        h.sched.add(r)
    h.run()
    for r in reqs:
        st = r.stats()
        assert st.queue_time is not None and st.queue_time >= 0
        assert st.ttft is not None and st.ttft >= st.queue_time
        assert st.num_output_tokens == 8 and st.num_prompt_tokens == len(r.prompt_ids)
        assert st.time_per_output_token == 1.0  # one token per step, and time is the step
        assert r.finish_time - r.first_token_time == 7
    # Two at a time: the last two waited for the first two to finish.
    assert reqs[0].stats().queue_time == 0 and reqs[3].stats().queue_time > 0


def test_bad_configuration_and_duplicate_ids():
    bm = BlockManager(8, 16)
    with pytest.raises(UsageError):
        Scheduler(bm, max_num_seqs=16, max_num_batched_tokens=8)
    s = Scheduler(bm)
    s.add(Request("x", [1, 2], 3))
    with pytest.raises(ValueError):
        s.add(Request("x", [1, 2], 3))


# ---- speculative drafts -------------------------------------------------------------


class GuessingRunner(FakeRunner):
    """The fake runner, verifying drafts: a guess is right when it is the fake model's token.

    Rejected guesses leave their (wrong) history hashes in their slots; the read-back of
    later steps would see them if a truncated slot were ever read before being rewritten."""

    def run(self, step: SchedulerStep) -> dict[str, list[int]]:
        bs = self.bs
        for src, dst in step.copies:
            self.rows[dst * bs:(dst + 1) * bs] = self.rows[src * bs:(src + 1) * bs]
        hashes = {}
        for c in step.chunks:
            r = c.request
            known = len(c.token_ids) - c.num_draft
            assert c.start == r.num_computed and c.token_ids[:known] == r.all_ids[c.start:c.start + known]
            assert c.num_draft == 0 or c.sample
            h = hashes[r.request_id] = history_hashes(r.all_ids[:c.start] + c.token_ids)
            for pos in range(c.start, c.end):
                self.rows[self._slot(c.block_table, pos)] = h[pos]
        sampled = {}
        for c in step.chunks:
            h = hashes[c.request.request_id]
            for pos in range(c.end):
                assert self.rows[self._slot(c.block_table, pos)] == h[pos], (c.request.request_id, pos)
            if not c.sample:
                continue
            draft = c.token_ids[len(c.token_ids) - c.num_draft:]
            tokens = []
            for i in range(c.num_draft + 1):
                tokens.append(next_token(h[c.end - c.num_draft - 1 + i]))
                if i == c.num_draft or tokens[-1] != draft[i]:
                    break
            sampled[c.request.request_id] = tokens
        return sampled


def true_continuation(ids: list[int], k: int) -> list[int]:
    ids = list(ids)
    for _ in range(k):
        ids.append(next_token(history_hashes(ids)[-1]))
    return ids[-k:] if k else []


@pytest.mark.parametrize("seed", [0, 1])
def test_drafts_keep_outputs_and_blocks_right(seed):
    """Decoding requests carry guesses, right up to a random point and then wrong; outputs must
    equal the plain run, rejected slots must go back, and no stale slot may ever be read."""
    rng = random.Random(seed)
    specs = mixed_specs(12, seed=10 + seed, max_out=40)
    # a small pool too, so drafts meet full pools, preemption and copy-on-write of shared prefixes
    h = Harness(num_blocks=40, block_size=8, max_num_seqs=6, max_num_batched_tokens=64)
    h.runner = GuessingRunner(h.bm)
    reqs = [s.request() for s in specs]
    for r in reqs:
        h.sched.add(r)
    drafted = accepted = 0
    n = 0
    while h.sched.has_unfinished():
        for r in h.sched.running:
            if r.num_uncomputed == 1:
                k = rng.randint(0, 6)
                guess = true_continuation(r.all_ids, k)
                cut = rng.randint(0, k)
                r.draft = guess[:cut] + [(t + 1) % VOCAB for t in guess[cut:]]
        before = {r.request_id: len(r.output_ids) for r in h.sched.running}
        step = h.step()
        for c in step.chunks:
            if c.num_draft:
                drafted += c.num_draft
                accepted += len(c.request.output_ids) - before[c.request.request_id] - 1
                # the table covers exactly the good KV: rejected guesses gave their slots back
                if not c.request.is_finished:
                    assert h.bm.num_tokens(c.request.request_id) == c.request.num_computed
        n += 1
        assert n < 5000
    h.reported += h.sched.schedule().finished
    assert h.bm.num_free_blocks == h.bm.num_blocks
    for s, r in zip(specs, reqs):
        assert outcome(r) == alone(s), s.rid
    assert drafted > 50 and 0 < accepted < drafted
    assert max(len(st.chunks) for st in h.steps) >= 3


def test_a_draft_never_exceeds_max_tokens_the_context_or_the_budget():
    h = Harness(num_blocks=64, block_size=8, max_num_seqs=1, max_num_batched_tokens=8, n_ctx=40)
    h.runner = GuessingRunner(h.bm)
    r = Request("r", list(range(1, 31)), max_tokens=6)
    h.sched.add(r)
    while not r.output_ids:
        h.step()  # the prompt, in chunks of 8
    r.draft = true_continuation(r.all_ids, 20)
    step = h.sched.schedule()
    # max_tokens 6 with one output already: 4 guesses, as the token after them is sampled anyway
    assert step.chunks[0].num_draft == 4 and r.draft == []
    h.sched.update(step, h.runner.run(step))
    assert len(r.output_ids) == 6 and r.finish_reason == "length"

    r = Request("s", list(range(1, 36)), max_tokens=50)  # 35 of n_ctx 40: room for 4 more KV slots
    h.sched.add(r)
    while not r.output_ids:
        h.step()
    r.draft = true_continuation(r.all_ids, 20)
    step = h.sched.schedule()
    assert step.chunks[0].num_draft == 4 and len(step.chunks[0].token_ids) == 5
    h.sched.update(step, h.runner.run(step))
    assert r.num_tokens == 41 and r.finish_reason == "length"  # the last sampled token needs no slot

    r = Request("t", [5, 6, 7], max_tokens=50)  # the budget of 8 rows caps the guess at 7
    h.sched.add(r)
    h.step()
    r.draft = true_continuation(r.all_ids, 20)
    step = h.sched.schedule()
    assert step.num_tokens == 8 and step.chunks[0].num_draft == 7
    h.sched.update(step, h.runner.run(step))
    h.bm.check_invariants()


def test_a_draft_never_preempts_or_starves_another_request():
    """Guesses take only what the step's real tokens leave: here the last free block goes to
    the other request's next token, not to the first request's guess."""
    h = Harness(num_blocks=4, block_size=4, max_num_seqs=2, max_num_batched_tokens=32)
    h.runner = GuessingRunner(h.bm)
    a, b = Request("a", [1, 2, 3], max_tokens=20), Request("b", list(range(1, 9)), max_tokens=20)
    h.sched.add(a)
    h.sched.add(b)
    h.step()  # both prompts: a has 3 of its block's 4 slots, b fills 2 blocks exactly
    assert a.output_ids and b.output_ids
    a.draft = true_continuation(a.all_ids, 2)
    step = h.sched.schedule()
    assert step.preempted == [] and {c.request.request_id for c in step.chunks} == {"a", "b"}
    assert next(c for c in step.chunks if c.request is a).num_draft == 0  # no block left for it
    h.sched.update(step, h.runner.run(step))
    h.bm.check_invariants()
