"""Size guards for chat-template rendering: estimate before allocating, account after.

A chat template is untrusted code, and one short expression can ask Python
for gigabytes (``'a'.center(10**9)``, ``'{:{w}}'.format(...)``, a loop that
keeps ten thousand distinct copies of a big string). Two rules bound what a
render can take:

* every operation that can grow its output (padding, ``replace``, ``join``,
  ``*``, ``%``, ``str.format``, ``expandtabs``, ``translate``, ``tojson``...)
  is *estimated* before it runs and refused if the estimate passes the
  per-value length cap; a method or filter with no estimate is refused
  outright: methods of builtin types go through an allow-list;
* every value a guarded operation produces is *charged* (its size in bytes)
  to a per-render allocation budget, so many values that are each small
  enough still cannot add up to a large heap.

`chat.py` wires these into the jinja2 sandbox; this module knows nothing of
jinja beyond its Namespace, Undefined and formatter classes.
"""

from __future__ import annotations

import contextvars
import re
import sys
import time
import types
from collections.abc import Mapping, MappingView

from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace

from .errors import LocalLLMError

# Per-value length cap (characters, bytes or elements). It grows with the
# input so long conversations render; the fixed part leaves room for a
# template's own boilerplate.
BASE_MAX_LEN = 1_000_000
INPUT_LEN_FACTOR = 4
# Bytes all produced values may add up to in one render. Real templates copy
# each message a handful of times (every ``+`` makes a new string).
BASE_MAX_ALLOC = 32 * 1024 * 1024
INPUT_ALLOC_FACTOR = 32
MAX_INT_BITS = 4096  # integers this large have no business in a prompt
MAX_JSON_INDENT = 16


class TemplateError(LocalLLMError, ValueError):
    """A chat template failed to render, was refused, or called raise_exception."""


# ---------------------------------------------------------------- per-render budget


class Budget:
    __slots__ = ("allocated", "deadline", "max_alloc", "max_len", "ticks", "time_limit")

    def __init__(self, time_limit: float, input_size: int):
        self.time_limit = time_limit
        self.deadline = time.perf_counter() + time_limit
        self.max_len = BASE_MAX_LEN + INPUT_LEN_FACTOR * input_size
        self.max_alloc = BASE_MAX_ALLOC + INPUT_ALLOC_FACTOR * input_size
        self.allocated = 0
        self.ticks = 0


# A ContextVar, not an environment attribute: one cached environment serves
# every thread, and each render needs its own clock and budget.
budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("localllm_chat_budget", default=None)


def tick() -> None:
    b = budget.get()
    if b is None:
        return
    b.ticks += 1
    if (b.ticks & 63) == 0 and time.perf_counter() > b.deadline:
        raise TemplateError(f"chat template exceeded its {b.time_limit:g} s render time limit")


def max_len() -> int:
    b = budget.get()
    return b.max_len if b is not None else BASE_MAX_LEN


def check_len(n: int, what: str) -> None:
    cap = max_len()
    if n > cap:
        raise TemplateError(f"chat template tried to build {what} of length {n:,} (limit {cap:,})")


def charge(nbytes: int) -> None:
    b = budget.get()
    if b is None:
        return
    b.allocated += nbytes
    if b.allocated > b.max_alloc:
        raise TemplateError(f"chat template allocated more than {b.max_alloc:,} bytes while rendering")


_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset)


def _footprint(value) -> int:
    """Bytes held by a new value: the object plus, for containers, its direct elements.

    Elements may be shared with other values, so this overcounts; that is the
    safe direction, and it is what stops a loop from keeping many distinct
    big strings in a list.
    """
    size = sys.getsizeof(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        size += sum(map(sys.getsizeof, value))
    elif isinstance(value, dict):
        size += sum(map(sys.getsizeof, value)) + sum(map(sys.getsizeof, value.values()))
    return size


def produced(value, what: str = "a value"):
    """Check and charge a value a guarded operation just made; returns it."""
    if isinstance(value, _SIZED):
        check_len(len(value), what)
        charge(_footprint(value))
    return value


def emitted(value, what: str, escaped: bool = False):
    """Check and charge a value about to be turned into output text (it may stay in a buffer).

    Autoescaping makes a new string up to five times as long ('&' -> '&amp;').
    """
    n = check_text(value, what)
    size = sys.getsizeof(value) if isinstance(value, str) else n
    charge(5 * size if escaped else size)
    return value


def produced_container(value):
    """Charge a list/tuple/dict literal: only its own slots, the elements exist already."""
    if isinstance(value, _SIZED):
        check_len(len(value), "a literal")
        charge(sys.getsizeof(value))
    return value


# ---------------------------------------------------------------- text size


def _int_text_len(v: int) -> int:
    return v.bit_length() // 3 + 2  # decimal digits (log10 2 < 1/3) and a sign


def text_weight(value, cap: int) -> int:
    """About len(str(value)), counting shared references each time (as str() would); stops past cap.

    Containers can hold the same big string many times over, so their len()
    says nothing about the text they turn into.
    """
    total, stack = 0, [value]
    while stack and total <= cap:
        v = stack.pop()
        if isinstance(v, (str, bytes, bytearray)):
            total += len(v)
        elif isinstance(v, bool) or v is None:
            total += 5
        elif isinstance(v, int):
            total += _int_text_len(v)
        elif isinstance(v, float):
            total += 24
        elif isinstance(v, Mapping):
            total += 2 + 6 * len(v)
            for kv in v.items():
                stack.extend(kv)
        elif isinstance(v, (list, tuple, set, frozenset, MappingView)):
            total += 2 + 4 * len(v)
            stack.extend(v)
        elif isinstance(v, Namespace):
            # its repr shows every attribute
            stack.append(object.__getattribute__(v, "_Namespace__attrs"))
            total += 16
        elif isinstance(v, Undefined):
            total += 9
        elif isinstance(v, types.MethodType):
            # '<bound method X.f of <repr of self>>'
            stack.append(v.__self__)
            total += 64
        else:
            total += 64
    return total


def check_text(value, what: str) -> int:
    """Refuse a value whose string form would exceed the cap, before anything stringifies it."""
    cap = max_len()
    n = len(value) if isinstance(value, str) else text_weight(value, cap)
    if n > cap:
        raise TemplateError(f"chat template tried to turn {what} of length over {cap:,} into text")
    return n


def _natural_len(value) -> int:
    """Longest text a plain conversion of value gives, in any base or float notation."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() + 3  # binary is the longest base
    if isinstance(value, float):
        return 330  # '%f' of 1e308 has 309 digits
    return text_weight(value, max_len())


def _as_count(value, what: str) -> int:
    """A width, count or length argument; non-integers are refused rather than guessed."""
    if not isinstance(value, int):
        raise TemplateError(f"chat template passed a {type(value).__name__} as {what}")
    return value


# ---------------------------------------------------------------- printf-style %


_PRINTF_FLAGS = "-+ #0"
_PRINTF_NUMERIC = frozenset("diouxX")
_PRINTF_FLOAT = frozenset("eEfFgG")


def _printf_number(fmt: str, i: int, take) -> tuple[int, int]:
    """A width or precision at fmt[i]: digits or '*' (taken from the arguments)."""
    if i < len(fmt) and fmt[i] == "*":
        return _as_count(take(), "a '*' width"), i + 1
    j = i
    while j < len(fmt) and fmt[j].isdigit():
        j += 1
    if j - i > 12:
        raise TemplateError("chat template used a %-format width with too many digits")
    return (int(fmt[i:j]) if j > i else 0), j


def printf_estimate(fmt: str | bytes | bytearray, values) -> int:
    """Upper bound on len(fmt % values), read the way CPython parses it; refuses what it cannot read."""
    if isinstance(fmt, (bytes, bytearray)):
        fmt = bytes(fmt).decode("latin-1")
    positional = values if isinstance(values, tuple) else (values,)
    next_pos = 0

    def take():
        nonlocal next_pos
        if next_pos >= len(positional):
            raise TemplateError("chat template's %-format has more fields than arguments")
        next_pos += 1
        return positional[next_pos - 1]

    total, i, n, cap = 0, 0, len(fmt), max_len()
    while True:
        j = fmt.find("%", i)
        if j < 0 or total > cap:
            return total + n - i
        total += j - i
        i = j + 1
        keyed = False
        if i < n and fmt[i] == "(":
            depth, k = 1, i + 1
            while k < n and depth:
                depth += {"(": 1, ")": -1}.get(fmt[k], 0)
                k += 1
            if depth or not isinstance(values, Mapping):
                raise TemplateError("chat template's %(key) format needs a closed key and a mapping")
            key = fmt[i + 1 : k - 1]
            if key not in values:
                raise TemplateError(f"chat template's %-format names a missing key {key!r}")
            arg, keyed, i = values[key], True, k
        while i < n and fmt[i] in _PRINTF_FLAGS:
            i += 1
        if keyed and i < n and fmt[i] == "*":
            raise TemplateError("chat template mixed a %(key) field with a '*' width")
        width, i = _printf_number(fmt, i, take)
        precision = 0
        if i < n and fmt[i] == ".":
            precision, i = _printf_number(fmt, i + 1, take)
        while i < n and fmt[i] in "hlL":
            i += 1
        if i >= n:
            raise TemplateError("chat template's %-format ends inside a field")
        conv = fmt[i]
        i += 1
        if conv == "%":
            total += max(width, 1)
            continue
        if not keyed:
            arg = take()
        if conv in _PRINTF_NUMERIC:
            natural = _natural_len(arg) if isinstance(arg, (int, float)) else 32
        elif conv in _PRINTF_FLOAT:
            natural = 330
        elif conv == "c":
            natural = _natural_len(arg) if isinstance(arg, (str, bytes)) else 4
        elif conv in "srab":
            natural = text_weight(arg, max_len())
        else:
            raise TemplateError(f"chat template used an unsupported %-format character {conv!r}")
        # width pads, precision adds digits (or truncates, for %s): either way an upper bound
        total += max(width, 0) + precision + natural


def check_printf(fmt, values, what: str) -> None:
    tick()
    check_len(printf_estimate(fmt, values), what)


# ---------------------------------------------------------------- str.format


_SPEC_NUMBERS = re.compile(r"\d+")


def format_field_estimate(value, spec: str) -> int:
    """Upper bound on len(format(value, spec)) once nested fields are filled in.

    Every digit run counts (width, precision, a digit used as fill): more
    than needed, never less.
    """
    numbers = _SPEC_NUMBERS.findall(spec)
    if any(len(d) > 12 for d in numbers):
        raise TemplateError("chat template used a format width with too many digits")
    extra = sum(map(int, numbers))
    natural = _natural_len(value)
    if isinstance(value, str):
        return natural + extra
    # grouping separators, sign, exponent; a custom __format__ (dates) expands its spec
    return natural + natural // 2 + extra + 8 * len(spec) + 340


class _FormatSizeGuard:
    """Mixed into jinja's sandboxed formatters: each field is estimated after its spec is resolved."""

    _produced = 0

    def vformat(self, format_string, args, kwargs):
        self._produced = 0
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value, conversion):
        if conversion in ("r", "a"):
            check_text(value, "a str.format field")
        return super().convert_field(value, conversion)

    def format_field(self, value, format_spec):
        tick()
        check_len(format_field_estimate(value, format_spec), "a str.format field")
        out = super().format_field(value, format_spec)
        self._produced += len(out)
        check_len(self._produced, "the result of str.format")
        return out


class GuardedFormatter(_FormatSizeGuard, SandboxedFormatter):
    pass


class GuardedEscapeFormatter(_FormatSizeGuard, SandboxedEscapeFormatter):
    pass


# ---------------------------------------------------------------- methods of builtin types

# Allow-lists. SAFE methods cannot grow their output past a small constant
# factor of what already exists (upper() of 'ß', encode to UTF-32, split
# into a list); the result is then checked and charged like any other.
# Every other method either has an estimate below or is refused.
_SAFE_TEXT = frozenset(
    "capitalize casefold count decode encode endswith find fromhex hex index isalnum isalpha isascii isdecimal "
    "isdigit isidentifier islower isnumeric isprintable isspace istitle isupper lower lstrip maketrans partition "
    "removeprefix removesuffix rfind rindex rpartition rsplit rstrip split splitlines startswith strip swapcase "
    "title upper".split()
)
_SAFE_SET = frozenset("copy difference intersection isdisjoint issubset issuperset symmetric_difference union".split())
_SAFE_METHODS: dict[type, frozenset[str]] = {
    str: _SAFE_TEXT | {"escape", "striptags", "unescape"},  # the last three: markupsafe.Markup
    bytes: _SAFE_TEXT | {"translate"},  # a bytes table maps each byte to one byte
    bytearray: _SAFE_TEXT | {"translate"},
    list: frozenset({"copy", "count", "index"}),
    tuple: frozenset({"count", "index"}),
    dict: frozenset({"copy", "get", "items", "keys", "values"}),
    set: _SAFE_SET,
    frozenset: _SAFE_SET,
    int: frozenset({"as_integer_ratio", "bit_count", "bit_length", "conjugate"}),
    float: frozenset({"as_integer_ratio", "conjugate", "fromhex", "hex", "is_integer"}),
    range: frozenset({"count", "index"}),
    type({}.keys()): frozenset({"isdisjoint"}),
    type({}.values()): frozenset(),
    type({}.items()): frozenset({"isdisjoint"}),
}


def _arg(args, kwargs, i: int, name: str, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _est_pad(owner, args, kwargs) -> int:
    return max(len(owner), _as_count(_arg(args, kwargs, 0, "width", 0), "a width"))


def _est_expandtabs(owner, args, kwargs) -> int:
    tab = _as_count(_arg(args, kwargs, 0, "tabsize", 8), "a tab size")
    return len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(tab, 0)


def estimate_replace(owner, old, new, count=-1) -> int:
    family = str if isinstance(owner, str) else (bytes, bytearray)
    if not isinstance(old, family) or not isinstance(new, family):
        return len(owner)  # mixing str and bytes raises TypeError before allocating
    hits = owner.count(old) if old else len(owner) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(owner) + hits * max(len(new) - len(old), 0)


def _est_replace(owner, args, kwargs) -> int:
    if len(args) < 2:
        return len(owner)  # a TypeError follows
    return estimate_replace(owner, *args[:3])


def estimate_join(sep, items) -> int:
    return len(sep) * max(len(items) - 1, 0) + text_weight(items, max_len())


def _est_join(owner, args, kwargs) -> int:
    return estimate_join(owner, args[0]) if args else 0


def _est_translate(owner, args, kwargs) -> int:
    table = _arg(args, kwargs, 0, "table", None)
    if isinstance(table, Mapping):
        values = table.values()
    elif isinstance(table, (list, tuple)):
        values = table
    else:
        raise TemplateError("chat template called str.translate with a table that is not a dict or list")
    longest = max((len(v) for v in values if isinstance(v, str)), default=1)
    return len(owner) * max(longest, 1)


def _est_to_bytes(owner, args, kwargs) -> int:
    return _as_count(_arg(args, kwargs, 0, "length", 1), "a byte length")


def _est_fromkeys(owner, args, kwargs) -> int:
    keys = _arg(args, kwargs, 0, "iterable", ())
    if not isinstance(keys, (str, list, tuple, dict, set, frozenset, range)):
        raise TemplateError("chat template called dict.fromkeys on something without a length")
    return len(keys)


_PAD = {"center": _est_pad, "ljust": _est_pad, "rjust": _est_pad, "zfill": _est_pad}
_TEXT_ESTIMATES = {**_PAD, "expandtabs": _est_expandtabs, "replace": _est_replace, "join": _est_join}
_ESTIMATED_METHODS: dict[type, dict] = {
    str: {**_TEXT_ESTIMATES, "translate": _est_translate},
    bytes: _TEXT_ESTIMATES,
    bytearray: _TEXT_ESTIMATES,
    int: {"to_bytes": _est_to_bytes},
    dict: {"fromkeys": _est_fromkeys},
}

FORMAT_METHODS = frozenset({"format", "format_map"})

_BOUND = (types.BuiltinMethodType, types.MethodType, types.MethodWrapperType)
_UNBOUND = (types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType)


def _guarded_kind(owner) -> type | None:
    """The builtin type whose rules apply to owner (an instance, or a type for classmethods)."""
    mro = owner.__mro__ if isinstance(owner, type) else type(owner).__mro__
    for cls in mro:
        if cls in _SAFE_METHODS:
            return cls
    return None


def builtin_method(obj, args: tuple):
    """(kind, name, owner, args) when obj is a method of a guarded builtin type, else None.

    Unbound methods (``dict.get(d, k)`` through the ``dict`` global) are
    read as bound to their first argument.
    """
    if isinstance(obj, _BOUND):
        owner = obj.__self__
    elif isinstance(obj, _UNBOUND):
        if not args or not isinstance(args[0], obj.__objclass__):
            return None  # a TypeError follows, nothing is built
        owner, args = args[0], args[1:]
    else:
        return None
    if isinstance(owner, types.ModuleType) or owner is None:
        return None
    kind = _guarded_kind(owner)
    if kind is None:
        return None
    return kind, obj.__name__, owner, args


def check_method(kind: type, name: str, owner, args: tuple, kwargs: dict) -> None:
    """Refuse a builtin method that is not allowed, or whose estimated result is too long."""
    if name in _SAFE_METHODS[kind]:
        return
    estimate = _ESTIMATED_METHODS.get(kind, {}).get(name)
    if estimate is None:
        raise TemplateError(f"chat template called {kind.__name__}.{name}, which is not allowed")
    check_len(estimate(owner, args, kwargs), f"the result of {kind.__name__}.{name}")


# ---------------------------------------------------------------- filters


def _seps(separators) -> tuple[int, int]:
    if separators is None:
        return 2, 2
    item_sep, key_sep = tuple(separators)
    if not isinstance(item_sep, str) or not isinstance(key_sep, str):
        raise TemplateError("tojson separators must be strings")
    return len(item_sep), len(key_sep)


def estimate_json(value, indent=None, separators=None) -> int:
    """Upper bound on len(json.dumps(...)) before escapes: indentation grows with depth, so it is counted per line."""
    if isinstance(indent, bool) or (indent is not None and not isinstance(indent, (int, str))):
        raise TemplateError("tojson indent must be an integer or a string")
    step = len(indent) if isinstance(indent, str) else max(indent or 0, 0)
    if step > MAX_JSON_INDENT:
        raise TemplateError(f"tojson indent {indent!r} is too large (limit {MAX_JSON_INDENT})")
    newline = 1 if indent is not None else 0
    item_sep, key_sep = _seps(separators)
    cap = max_len()
    total, stack = 0, [(value, 0)]
    while stack and total <= cap:
        v, depth = stack.pop()
        if isinstance(v, Mapping):
            per_item = item_sep + key_sep + newline + step * (depth + 1)
            total += 2 + (len(v) + 1) * per_item
            for kv in v.items():
                stack.extend((x, depth + 1) for x in kv)
        elif isinstance(v, (list, tuple)):
            total += 2 + (len(v) + 1) * (item_sep + newline + step * (depth + 1))
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, str):
            total += len(v) + 2
        else:
            total += text_weight(v, cap)
    return total


def _est_filter_join(value, args, kwargs) -> int:
    return estimate_join(_arg(args, kwargs, 0, "d", ""), value)


def _est_filter_replace(value, args, kwargs) -> int:
    if not isinstance(value, str) or len(args) < 2:
        return text_weight(value, max_len())
    return estimate_replace(value, *args[:3])


def _est_indent(value, args, kwargs) -> int:
    width = _arg(args, kwargs, 0, "width", 4)
    w = len(width) if isinstance(width, str) else _as_count(width, "an indent width")
    text = value if isinstance(value, str) else ""
    return text_weight(value, max_len()) + max(w, 0) * (text.count("\n") + 1)


def _est_center(value, args, kwargs) -> int:
    return max(text_weight(value, max_len()), _as_count(_arg(args, kwargs, 0, "width", 80), "a width"))


def _est_format(value, args, kwargs) -> int:
    if args and kwargs:
        return 0  # jinja raises FilterArgumentError
    return printf_estimate(value if isinstance(value, str) else str(value), kwargs or args)


def _est_wordwrap(value, args, kwargs) -> int:
    wrap = _arg(args, kwargs, 2, "wrapstring", None)
    n = text_weight(value, max_len())
    # every line holds at least one character, so at most n + 1 breaks
    return n + (n + 1) * (len(wrap) if isinstance(wrap, str) else 2)


def _est_batch(value, args, kwargs) -> int:
    return _as_count(_arg(args, kwargs, 0, "linecount", 1), "a batch size")


def _est_slice(value, args, kwargs) -> int:
    return 8 * _as_count(_arg(args, kwargs, 0, "slices", 1), "a slice count")


def _est_tojson(value, args, kwargs) -> int:
    return estimate_json(value, _arg(args, kwargs, 1, "indent", None), _arg(args, kwargs, 2, "separators", None))


def _est_sum(value, args, kwargs) -> int:
    start = _arg(args, kwargs, 1, "start", 0)
    if isinstance(start, (int, float)):
        return 0  # numbers: sum of anything else raises TypeError
    if _arg(args, kwargs, 0, "attribute", None) is not None or not isinstance(value, (list, tuple)):
        raise TemplateError("chat template summed sequences it cannot size")
    return text_weight(start, max_len()) + text_weight(value, max_len())


# Filters whose output is bounded by a small factor of their input.
LINEAR_FILTERS = frozenset(
    "abs attr capitalize count d default dictsort e escape filesizeformat first float forceescape groupby int items "
    "last length list lower map max min random reject rejectattr reverse round safe select selectattr sort string "
    "striptags title trim truncate unique upper urlencode wordcount xmlattr".split()
)
FILTER_ESTIMATES = {
    "batch": _est_batch,
    "center": _est_center,
    "format": _est_format,
    "indent": _est_indent,
    "join": _est_filter_join,
    "replace": _est_filter_replace,
    "slice": _est_slice,
    "sum": _est_sum,
    "tojson": _est_tojson,
    "wordwrap": _est_wordwrap,
}
# Anything else (pprint and urlize today, whatever a newer jinja adds) is refused:
# pprint indents by depth, urlize repeats its target/rel strings per link.

# Filters that never turn their input into one big string; everything else
# gets its input's text size checked first.
NON_TEXT_FILTERS = frozenset(
    "abs attr batch count d default dictsort first float groupby int items last length list map max min "
    "random reject rejectattr reverse round select selectattr slice sort sum unique".split()
)
