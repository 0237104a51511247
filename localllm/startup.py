"""What the user sees while a model loads and numba compiles kernels."""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time


@contextlib.contextmanager
def first_run_notice(delay_s: float = 1.0, stream=None):
    """Show a spinner on a terminal if loading takes longer than delay_s.

    Only the first run compiles kernels (they are cached afterwards), so a
    normal start finishes before the spinner would appear.
    """
    stream = stream or sys.stderr
    done = threading.Event()

    def spin():
        if done.wait(delay_s) or not stream.isatty():
            return
        t0 = time.monotonic()
        for ch in itertools.cycle("|/-\\"):
            stream.write(f"\rcompiling kernels, first run only {ch} {time.monotonic() - t0 + delay_s:4.0f} s")
            stream.flush()
            if done.wait(0.2):
                break
        stream.write("\r" + " " * 60 + "\r")
        stream.flush()

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        yield
    finally:
        done.set()
        th.join()
