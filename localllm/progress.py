"""A small stderr progress bar for long work (pulls, perplexity, quantize).

It draws only on a terminal, so logs and pipes stay clean.
"""

from __future__ import annotations

import sys
import time


def human_bytes(n: float) -> str:
    """A byte count for people: '512 B', '93.3 MB' (binary units)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class ProgressPrinter:
    """Callable(stage, done, total) that redraws one status line at most 10 times a second."""

    def __init__(self, stream=None, unit: str = "bytes", width: int = 30):
        self.stream = stream or sys.stderr
        self.unit = unit
        self.width = width
        self._last = 0.0
        self._stage = None
        self.enabled = self.stream.isatty()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if stage == self._stage and done < total and now - self._last < 0.1:
            return
        if stage != self._stage and self._stage is not None:
            self.stream.write("\n")
        self._stage, self._last = stage, now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * self.width)
        if self.unit == "bytes":
            amount = f"{human_bytes(done)}/{human_bytes(total)}"
        else:
            amount = f"{done}/{total} {self.unit}"
        self.stream.write(f"\r{stage:>8} [{bar:<{self.width}}] {frac * 100:5.1f}% {amount}")
        if done >= total:
            self.stream.write("\n")
            self._stage = None
        self.stream.flush()
