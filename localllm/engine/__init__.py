"""The batching engine: requests, the paged-KV block manager and the continuous-batching scheduler."""

from __future__ import annotations

from .block_manager import BlockManager, OutOfBlocks
from .request import FINISH_REASONS, Request, RequestStats, RequestStatus
from .scheduler import ScheduledChunk, Scheduler, SchedulerStep

__all__ = [
    "BlockManager",
    "OutOfBlocks",
    "FINISH_REASONS",
    "Request",
    "RequestStats",
    "RequestStatus",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerStep",
]
