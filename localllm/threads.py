"""One place that decides how many threads the kernels use."""

from __future__ import annotations

import os

from .errors import UsageError


def set_threads(threads: int | None = None) -> int:
    """Apply a thread count (argument, else $LOCALLLM_THREADS, else every core); return it."""
    from . import _numba_setup  # noqa: F401  (threading layer first)
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        env = os.environ.get("LOCALLLM_THREADS")
        try:
            threads = int(env) if env else limit
        except ValueError:
            raise UsageError(f"LOCALLLM_THREADS must be an integer, got {env!r}") from None
    if not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    threads = min(threads, limit)
    numba.set_num_threads(threads)
    return threads
