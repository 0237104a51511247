"""Short, escaped renderings of names and values that come from a file.

A corrupt length field can make a "name" megabytes long, and a value may be a
262k-element vocabulary: an error line must never print either in full.
"""

from __future__ import annotations

from typing import Any

MAX_QUOTE = 60  # characters of a name or value an error message shows


def quote(text: str, limit: int = MAX_QUOTE) -> str:
    """repr() of at most `limit` characters of text, with "..." when cut."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + "..."


def quote_value(value: Any, limit: int = MAX_QUOTE) -> str:
    """A metadata value as an error message shows it: kind and a short prefix."""
    if isinstance(value, str):
        return f"string {quote(value, limit)}"
    if isinstance(value, list):
        # only the first few items, each cut short, so a huge array costs nothing
        head = ", ".join(_item(v) for v in value[:4])
        if len(head) > limit:
            head = head[:limit] + "..."
        return f"array of {len(value)} [{head}{', ...' if len(value) > 4 else ''}]"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _item(value: Any) -> str:
    if isinstance(value, str):
        return quote(value, 20)
    if isinstance(value, list):
        return f"array of {len(value)}"
    return repr(value)
