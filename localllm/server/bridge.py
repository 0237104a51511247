"""The server's side of the engine: requests submitted from the event loop, events read back
without blocking it, and a limit on how many requests the server holds at once."""

from __future__ import annotations

import asyncio

from ..engine.engine import Engine, Event, EventSink, RequestFailed
from ..generation import Step
from ..sampling import SamplingParams
from .errors import APIError


class AsyncEvents(EventSink):
    """Events put on the engine thread, awaited on the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass

    async def get(self) -> Event:
        return await self._queue.get()


class Admission:
    """Counts the requests the server holds (running or waiting); past `limit` a new one gets 429."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def acquire(self) -> None:
        if self.held >= self.limit:
            raise APIError(429, f"the server already holds {self.held} requests (--max-queue {self.limit}); "
                                "retry later", type="rate_limit_error", code="queue_full")
        self.held += 1

    def release(self) -> None:
        self.held -= 1


class GenerationStream:
    """One engine request seen from the event loop. `close()` cancels it unless it finished,
    which frees its KV blocks: call it when the client goes away."""

    def __init__(self, engine: Engine, prompt_ids: list[int], params: SamplingParams, logprobs: int | None,
                 ignore_eos: bool = False):
        self._events = AsyncEvents()
        self._engine = engine
        try:
            self._handle = engine.submit(prompt_ids, params, logprobs, ignore_eos, sink=self._events)
        except RequestFailed as e:
            raise APIError(503, str(e), type="server_error", code="engine_unavailable") from None
        self.finished = False

    async def next(self) -> Event:
        while True:
            try:
                event = await asyncio.wait_for(self._events.get(), timeout=1.0)
                break
            except asyncio.TimeoutError:
                if not self._engine.alive:  # it died before it could fail this request itself
                    event = Event(Step(None, "", "error"), error=self._engine.failure or "the engine stopped")
                    break
        if event.stats is not None or event.error is not None:
            self.finished = True
        return event

    def close(self) -> None:
        if not self.finished:
            self.finished = True
            self._handle.cancel()
