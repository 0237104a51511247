"""Stop strings over streamed text.

Generated text arrives in pieces and a stop string may straddle several of
them, so `StopChecker` holds back only the shortest tail that could still grow
into a stop string and releases everything before it immediately.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopChecker"]


class StopChecker:
    """Feed pieces with `push`; emit what it returns; call `flush` at the end.

    When several stop strings complete inside one piece, the one that ends
    first wins (ties go to the one that starts first), which is what feeding
    the same text one character at a time would give.
    """

    def __init__(self, stops: Sequence[str]):
        if isinstance(stops, str):
            stops = (stops,)
        self.stops = tuple(stops)
        if any(not isinstance(s, str) or not s for s in self.stops):
            raise ValueError("stop strings must be non-empty strings")
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended generation

    def push(self, piece: str) -> tuple[str, bool]:
        """Add a piece; return (text safe to emit now, whether a stop string completed)."""
        if self.stopped:
            return "", True
        buf = self._pending + piece
        best = None  # (end, start, stop)
        for s in self.stops:
            i = buf.find(s)
            if i >= 0:
                key = (i + len(s), i, s)
                if best is None or key[:2] < best[:2]:
                    best = key
        if best is not None:
            self.stopped, self.matched, self._pending = True, best[2], ""
            return buf[: best[1]], True
        hold = self._partial_tail(buf)
        cut = len(buf) - hold
        self._pending = buf[cut:]
        return buf[:cut], False

    def _partial_tail(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of some stop string."""
        best = 0
        for s in self.stops:
            # Longest first, so the first hit is this stop's answer.
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        """The held-back tail (no stop completed); empty after a stop."""
        out, self._pending = self._pending, ""
        return "" if self.stopped else out
