"""Speculative decoding: guess a request's next tokens cheaply, verify them in one step.

A *draft source* proposes up to k tokens after a request's known tokens. The
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

The `Governor` decides how many tokens to guess. It keeps the measured cost
of a step by its number of rows and each request's acceptance rate, and picks
the k that maximises expected tokens per second of the whole step; k = 0
(no guessing) whenever guessing cannot win.
"""

from __future__ import annotations

from dataclasses import dataclass

LOOKUP_NGRAM_MAX = 3  # longest suffix n-gram prompt lookup matches
LOOKUP_NGRAM_MIN = 2  # a single repeated token is too weak a hint
DRAFT_MAX = 8  # default longest guess
PROBE_EVERY = 16  # steps between one-token probes while speculation is off (the first comes at once)


@dataclass(frozen=True)
class SpeculativeConfig:
    """What an engine's requests speculate with: method "lookup" (prompt lookup), guesses of
    at most draft_max tokens; adaptive=False always guesses as many as it can (tests, studies)."""

    method: str = "lookup"
    draft_max: int = DRAFT_MAX
    adaptive: bool = True

    def __post_init__(self):
        if self.method != "lookup":
            raise ValueError(f"unknown speculative method {self.method!r} (only 'lookup' is available)")
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


class Acceptance:
    """One request's guessing record: the geometric acceptance rate, with decay so it adapts."""

    DECAY = 0.9

    def __init__(self) -> None:
        self.accepted, self.rejected = 1.0, 1.0  # prior: one of each (rate 0.5)
        self.drafted_total = self.accepted_total = self.steps = 0
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


class Governor:
    """Step cost by number of rows, measured; draft length chosen to maximise tokens per second."""

    EMA = 0.2

    def __init__(self, draft_max: int, adaptive: bool = True):
        self.draft_max, self.adaptive = draft_max, adaptive
        self._cost: dict[int, float] = {}  # rows in the step -> smoothed seconds

    def record_step(self, rows: int, seconds: float) -> None:
        old = self._cost.get(rows)
        self._cost[rows] = seconds if old is None else old + self.EMA * (seconds - old)

    def cost(self, rows: int) -> float | None:
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

    def choose(self, acceptance: Acceptance, base_rows: int, decoding: int, available: int) -> int:
        """Draft length for one request: base_rows are the step's rows without its guesses,
        decoding the requests that sample in it (each gets one token however long the step)."""
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
            cost = self.cost(base_rows + k)
            speed = (decoding - 1 + expected) / cost
            if speed > best:
                best_k, best = k, speed
        if best_k == 0:
            acceptance.steps_off += 1
            if acceptance.steps_off >= PROBE_EVERY:  # conditions change: try one guess now and then
                acceptance.steps_off = 0
                return 1
        else:
            acceptance.steps_off = 0
        return best_k
