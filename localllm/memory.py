"""Memory preflight for big allocations (the KV cache).

numpy's "Unable to allocate 107 GiB" says neither what asked for it nor what
to do. Before the KV cache is allocated, its size is compared with the memory
this machine has available; a cache that cannot fit is refused with one line
that says what it needs, what there is, and how large a context would fit.
When the available memory cannot be read, nothing is checked, and a
MemoryError from the allocation itself gets the same message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import NotEnoughMemory

MEMINFO = "/proc/meminfo"


def available_bytes(meminfo: str = MEMINFO) -> int | None:
    """Memory available to a new allocation without swapping, or None when unknown.

    Linux's MemAvailable counts reclaimable page cache (the mapped model file
    among it); elsewhere the free physical pages are the closest measure."""
    try:
        with open(meminfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    value, _, unit = line.split(":", 1)[1].strip().partition(" ")
                    return int(value) * (1024 if unit.strip().lower() == "kb" else 1)
    except (OSError, ValueError):
        pass
    try:
        pages, page_size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or page_size <= 0:
        return None
    return pages * page_size


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def kv_cache_error(needed: int, n_ctx: int, available: int | None,
                   allocation_failed: bool = False) -> NotEnoughMemory:
    """The one-line refusal: what a context of n_ctx tokens needs, what there is, what would fit."""
    have = "" if available is None else f"{format_bytes(available)} available"
    if allocation_failed:
        why = "allocating it failed" + (f" ({have})" if have else "")
    else:
        why = f"this machine has {have}"
    fits = ""
    if available is not None and needed > 0 and n_ctx > 0:
        n_fit = int(available // (needed / n_ctx))
        fits = f" (at most about {n_fit} tokens would fit)" if n_fit < n_ctx else ""
    return NotEnoughMemory(f"a {n_ctx}-token context needs {format_bytes(needed)} for the KV cache but {why}; "
                           f"use a smaller -c / n_ctx{fits}")


def check_kv_fits(needed: int, n_ctx: int, available: int | None) -> None:
    """Refuse a KV cache of `needed` bytes larger than the available memory; None (unknown) passes."""
    if available is not None and needed > available:
        raise kv_cache_error(needed, n_ctx, available)


@contextmanager
def kv_allocation(needed: int, n_ctx: int) -> Iterator[None]:
    """Preflight, then run the allocation; a MemoryError inside becomes the same clear message."""
    available = available_bytes()
    check_kv_fits(needed, n_ctx, available)
    try:
        yield
    except NotEnoughMemory:
        raise
    except MemoryError as e:
        raise kv_cache_error(needed, n_ctx, available, allocation_failed=True) from e
