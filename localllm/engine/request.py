"""One generation request as the scheduler sees it.

The scheduler owns every field except `params`, which belongs to the runner
(its sampling parameters, seed, logprob count...) and is carried untouched.
Timestamps come from the scheduler's clock, so tests can inject a fake one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestStatus", "Request", "RequestStats", "FINISH_REASONS"]

# "stop": a stop token or stop string; "length": max_tokens or the context
# window; "cancelled": abort(); "error": rejected at add() or failed.
FINISH_REASONS = frozenset({"stop", "length", "cancelled", "error"})


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class RequestStats:
    """Latency of one request, in the clock's units (seconds by default).

    `time_per_output_token` is the mean gap between output tokens after the
    first one, so it measures decode speed and excludes time to first token;
    it is None with fewer than two output tokens.
    """

    queue_time: float | None  # arrival -> first scheduled
    ttft: float | None  # arrival -> first output token
    time_per_output_token: float | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_prompt_tokens: int
    num_computed_total: int
    num_preemptions: int


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    stop_token_ids: frozenset[int] = frozenset()
    params: Any = None  # opaque here: the runner's sampling parameters

    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens of all_ids whose KV is in the cache
    # Speculative decoding: guesses at the tokens after all_ids, set by the engine before
    # schedule(), which verifies them in the next decode step (and clears them)
    draft: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: str | None = None
    error: str | None = None  # one line, set when the request is rejected or fails

    num_cached_prompt_tokens: int = 0  # prefix-cache hits, summed over admissions
    num_computed_total: int = 0  # tokens actually computed, recomputes included
    num_preemptions: int = 0

    arrival_time: float | None = None
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None

    def __post_init__(self) -> None:
        self.prompt_ids = list(self.prompt_ids)
        self.stop_token_ids = frozenset(self.stop_token_ids)

    @property
    def all_ids(self) -> list[int]:
        """Prompt then outputs: the tokens whose KV the sequence needs."""
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_uncomputed(self) -> int:
        """Tokens still to run through the model before the next sample."""
        return self.num_tokens - self.num_computed

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def drop_outputs_from(self, n: int) -> None:
        """Forget output tokens n and later: a stop string ended the text at token n - 1, and
        the guesses accepted after it in the same step are not outputs."""
        if not self.is_finished:
            raise ValueError("outputs are dropped only from a finished request")
        del self.output_ids[n:]

    def stats(self) -> RequestStats:
        def since(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else end - start

        n_out = len(self.output_ids)
        tpot = None
        if n_out > 1 and self.first_token_time is not None and self.finish_time is not None:
            tpot = (self.finish_time - self.first_token_time) / (n_out - 1)
        return RequestStats(
            queue_time=since(self.arrival_time, self.first_scheduled_time),
            ttft=since(self.arrival_time, self.first_token_time),
            time_per_output_token=tpot,
            num_prompt_tokens=len(self.prompt_ids),
            num_output_tokens=n_out,
            num_cached_prompt_tokens=self.num_cached_prompt_tokens,
            num_computed_total=self.num_computed_total,
            num_preemptions=self.num_preemptions,
        )
