"""Speculative decoding: guess a request's next tokens cheaply, verify them in one step.

A *draft source* proposes up to k tokens after a request's known tokens: prompt
lookup (`PromptLookup`, n-gram matches in the request's own text) or a smaller
draft model with the same vocabulary (`engine/drafter.py`). The
engine appends them to the request's next decode chunk, so the target model
computes all k+1 rows in one forward pass, which reads the weights once. Every
row has the arithmetic it would have alone, so row i's logits are exactly what
plain decoding would compute there.

Verification samples each row with the request's own sampler, in order, and
stops at the first sampled token that differs from the guess. With a guess
that is a fixed token (a one-hot draft distribution, which is what prompt
lookup gives) this is the exact speculative rejection rule: a guess d is kept
with probability p(d), and on rejection the token comes from p without d,
renormalized. It also makes the same sampler calls, in the same order, as
plain decoding, so the output (greedy or seeded) is token for token the same.
A draft model guesses its argmax for greedy requests, so the same holds there.

A sampled request's draft model guess is drawn from the draft's distribution
p, and `rejection_step` applies the rejection rule of Leviathan et al. and
Chen et al. (2023): keep the guess d with probability min(1, q(d)/p(d)) under
the target's distribution q, else draw from max(q - p, 0) renormalized. The
output is then distributed exactly as the target's, but the random stream
differs from plain decoding's, so a seeded output is not the same tokens.

The `Governor` decides how many tokens to guess. It keeps the measured cost
of a step by its number of rows, the cost of one draft-model step, and each
request's acceptance rate, and picks the k that maximises expected tokens per
second of the whole step; k = 0 (no guessing) whenever guessing cannot win.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .sampling import draw

LOOKUP_NGRAM_MAX = 3  # longest suffix n-gram prompt lookup matches
LOOKUP_NGRAM_MIN = 2  # a single repeated token is too weak a hint
DRAFT_MAX = 8  # default longest guess
PROBE_EVERY = 16  # steps between one-token probes while speculation is off (the first comes at once)
# A draft model is never probed once it is off: a probe first catches the draft's cache up on
# every token since, and measured on 2 cores that catch-up (a draft prefill, ~5 ms a token for
# SmolLM2 Q4_1) cost a third of the time the target had spent meanwhile.
DRAFT_PRIOR = (4.0, 1.0)  # (accepted, rejected) before any guess: a same-vocabulary draft mostly agrees


METHODS = ("lookup", "draft")


@dataclass(frozen=True)
class SpeculativeConfig:
    """What an engine's requests speculate with: method "lookup" (prompt lookup) or "draft"
    (a draft model, given to the engine), guesses of at most draft_max tokens;
    adaptive=False always guesses as many as it can (tests, studies)."""

    method: str = "lookup"
    draft_max: int = DRAFT_MAX
    adaptive: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown speculative method {self.method!r} (choose from {', '.join(METHODS)})")
        if isinstance(self.draft_max, bool) or not isinstance(self.draft_max, int) or self.draft_max < 1:
            raise ValueError(f"draft_max must be a positive integer, got {self.draft_max!r}")


class PromptLookup:
    """Guesses by n-gram match: if the last n tokens occurred before, guess what followed them.

    Useful when the answer repeats its input (editing code, summaries, extraction,
    RAG). The index of n-grams grows with the request, so a guess costs a few dict
    lookups however long the context."""

    def __init__(self, n_max: int = LOOKUP_NGRAM_MAX, n_min: int = LOOKUP_NGRAM_MIN):
        self.n_max, self.n_min = n_max, n_min
        self._last_end: dict[tuple[int, ...], int] = {}  # n-gram -> latest position it ended at
        self._indexed = 0  # positions whose n-grams are in the index

    def propose(self, ids: list[int], k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of ids' longest matching suffix."""
        # index every position but the last, so a match is always an earlier occurrence
        for end in range(self._indexed, len(ids) - 1):
            for n in range(self.n_min, self.n_max + 1):
                if end + 1 >= n:
                    self._last_end[tuple(ids[end + 1 - n : end + 1])] = end
        self._indexed = max(self._indexed, len(ids) - 1)
        if k < 1:
            return []
        for n in range(min(self.n_max, len(ids)), self.n_min - 1, -1):
            end = self._last_end.get(tuple(ids[len(ids) - n :]))
            if end is not None:
                return ids[end + 1 : end + 1 + k]
        return []


def rejection_step(q_ids: np.ndarray, q: np.ndarray, p_ids: np.ndarray, p: np.ndarray, guess: int,
                   rng: np.random.Generator) -> int:
    """One row of the rejection rule: the guess (drawn from the draft's p) if kept, else a token
    from max(q - p, 0), renormalized. q and p are probabilities over the token ids q_ids and
    p_ids (each a sampler's `distribution`); the result is distributed exactly as q."""
    q_at = dict(zip(q_ids.tolist(), q.tolist()))
    p_at = dict(zip(p_ids.tolist(), p.tolist()))
    qd, pd = q_at.get(guess, 0.0), p_at.get(guess, 0.0)
    if pd <= 0.0:
        raise ValueError(f"guess {guess} has no probability under the draft distribution")
    if rng.random() * pd < qd:  # u < min(1, q/p): u < 1 always, so q >= p keeps it
        return guess
    residual = np.maximum(q - np.array([p_at.get(t, 0.0) for t in q_ids.tolist()]), 0.0)  # (len(q_ids),)
    if residual.sum() <= 0.0:  # p == q up to rounding: a rejection has no mass to go to, so q itself
        residual = q
    return draw(q_ids, residual, rng)


class Acceptance:
    """One request's guessing record: the geometric acceptance rate, with decay so it adapts."""

    DECAY = 0.9

    def __init__(self, prior: tuple[float, float] = (1.0, 1.0)) -> None:
        self.accepted, self.rejected = prior  # default prior: one of each (rate 0.5)
        self.drafted_total = self.accepted_total = self.steps = 0
        self.stopped = False  # a draft model's request whose guessing stopped paying: off for good
        self.steps_off = PROBE_EVERY - 1  # a request's first chance to guess is a probe: measure it

    @property
    def rate(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def record(self, drafted: int, accepted: int) -> None:
        self.accepted = self.accepted * self.DECAY + accepted
        self.rejected = self.rejected * self.DECAY + (1 if accepted < drafted else 0)
        self.drafted_total += drafted
        self.accepted_total += accepted
        self.steps += 1


class CostTable:
    """Measured seconds of a forward step by its number of rows (smoothed), and estimates between."""

    EMA = 0.2

    def __init__(self) -> None:
        self._cost: dict[int, float] = {}  # rows in the step -> smoothed seconds

    def record(self, rows: int, seconds: float) -> None:
        old = self._cost.get(rows)
        self._cost[rows] = seconds if old is None else old + self.EMA * (seconds - old)

    def __call__(self, rows: int) -> float | None:
        """Measured cost of a step of `rows` rows, else interpolated between the nearest measured
        sizes, else extended along the last two (flat from one point: optimistic, so an
        unmeasured size gets tried and measured). None before any step."""
        c = self._cost
        if rows in c or not c:
            return c.get(rows)
        below = [n for n in sorted(c) if n < rows]
        above = [n for n in sorted(c) if n > rows]
        if below and above:
            a, b = below[-1], above[0]
            return c[a] + (c[b] - c[a]) * (rows - a) / (b - a)
        side = below[-2:] if below else above[:2]
        if len(side) == 1:
            return c[side[0]]
        a, b = side
        slope = max(0.0, (c[b] - c[a]) / (b - a))
        edge = b if below else a
        return max(c[edge] + slope * (rows - edge), 1e-9)


class Governor:
    """Step costs, measured; draft length chosen to maximise tokens per second.

    `cost` is the target's step cost by rows, `draft_cost` a draft model's (by rows too).
    A draft model's k guesses for a request cost a first pass that catches its cache up
    (its rows join the other requests' catch-up rows) and k - 1 one-token passes; the
    requests of a step draft in lockstep, so a pass that already runs for another request
    costs only one more row."""

    def __init__(self, draft_max: int, adaptive: bool = True):
        self.draft_max, self.adaptive = draft_max, adaptive
        self.cost, self.draft_cost = CostTable(), CostTable()

    def record_step(self, rows: int, seconds: float) -> None:
        self.cost.record(rows, seconds)

    def record_draft_step(self, rows: int, seconds: float) -> None:
        self.draft_cost.record(rows, seconds)

    def draft_seconds(self, k: int, catch_up: int, first_rows: int, passes: list[int]) -> float:
        """Extra draft-model time of k guesses for one request: catch_up tokens joining a first
        pass of first_rows, then passes[j] rows already in the j-th later pass (0: not run).
        Unmeasured costs count as 0 (optimistic, so they get measured)."""
        dc = self.draft_cost

        def more(rows: int, extra: int) -> float:
            after, before = dc(rows + extra), (dc(rows) if rows else 0.0)
            return 0.0 if after is None or before is None else max(0.0, after - before)

        return more(first_rows, catch_up) + sum(more(passes[j] if j < len(passes) else 0, 1)
                                                for j in range(k - 1))

    def choose(self, acceptance: Acceptance, base_rows: int, decoding: int, available: int,
               draft_seconds: Callable[[int], float] | None = None) -> int:
        """Draft length for one request: base_rows are the step's rows without its guesses,
        decoding the requests that sample in it (each gets one token however long the step).
        draft_seconds(k): what guessing k costs beyond the target's step (a draft model's
        passes); None for a source that costs nothing (prompt lookup)."""
        k_max = min(self.draft_max, available)
        if k_max < 1 or not self.adaptive:
            return max(k_max, 0)
        base = self.cost(base_rows)
        if base is None:
            return 0
        alpha = acceptance.rate
        best_k, best = 0, decoding / base
        expected = 1.0
        for k in range(1, k_max + 1):
            expected += alpha ** k  # guesses are kept in order: the i-th only if all before it were
            cost = self.cost(base_rows + k) + (draft_seconds(k) if draft_seconds is not None else 0.0)
            speed = (decoding - 1 + expected) / cost
            if speed > best:
                best_k, best = k, speed
        if best_k == 0 and draft_seconds is None:
            acceptance.steps_off += 1
            if acceptance.steps_off >= PROBE_EVERY:  # conditions change: try one guess now and then
                acceptance.steps_off = 0
                return 1
        else:
            acceptance.steps_off = 0
        return best_k
