"""Chat templates: rendering a model's Jinja template safely, with a fallback.

A GGUF's ``tokenizer.chat_template`` is code from an untrusted file, so it
runs in a hardened jinja2 ``ImmutableSandboxedEnvironment``:

* any underscore attribute or key lookup (``__class__``, ``__globals__``...)
  and any attribute the sandbox calls unsafe raises `TemplateError` instead
  of quietly rendering as an empty Undefined;
* ``cycler``, ``lipsum`` and ``joiner`` are not exposed;
* every loop iteration, call, attribute lookup and operator ticks a per-render
  budget, so ``{% for i in range(10**5) %}{% for j in ... %}`` stops after
  ``time_limit`` seconds (checked in-process: a thread cannot be killed);
* size-amplifying operations (``'a' * n``, ``+``, ``~``, ``**`` on ints,
  ``%``/``format`` widths, padding methods and filters, ``join``,
  ``replace``) are checked *before* they allocate, against a cap that scales
  with the input size.

The template sees what Hugging Face's ``apply_chat_template`` provides:
``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``,
``raise_exception``, ``strftime_now``, an HF-style ``tojson`` filter, the
``loopcontrols`` extension and a pass-through ``{% generation %}`` block,
with ``trim_blocks`` and ``lstrip_blocks`` on.

Fallback: when a model's metadata has no ``tokenizer.chat_template``,
`template_or_fallback` returns `DEFAULT_CHATML` (the ChatML format llama.cpp
also falls back to) and warns, since ChatML is only a guess for such models.
"""

from __future__ import annotations

import contextvars
import json
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

from .errors import LocalLLMError

__all__ = [
    "TemplateError",
    "render_chat",
    "chat_template_from_metadata",
    "template_or_fallback",
    "DEFAULT_CHATML",
    "CHAT_TEMPLATE_KEY",
]

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"

DEFAULT_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Limits. The length cap grows with the input so long conversations render;
# the fixed part leaves room for a template's own boilerplate.
BASE_MAX_LEN = 1_000_000
INPUT_LEN_FACTOR = 4
MAX_INT_BITS = 4096  # integers this large have no business in a prompt
MAX_FORMAT_WIDTH = 100_000
MAX_JSON_INDENT = 16
DEFAULT_TIME_LIMIT_S = 1.0


class TemplateError(LocalLLMError, ValueError):
    """A chat template failed to render, was refused, or called raise_exception."""


# ---------------------------------------------------------------- per-render budget


class _Budget:
    __slots__ = ("deadline", "max_len", "ticks", "time_limit")

    def __init__(self, time_limit: float, max_len: int):
        self.time_limit = time_limit
        self.deadline = time.perf_counter() + time_limit
        self.max_len = max_len
        self.ticks = 0


# A ContextVar, not an env attribute: one cached environment serves every
# thread, and each render needs its own clock.
_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("localllm_chat_budget", default=None)


def _tick() -> None:
    b = _budget.get()
    if b is None:
        return
    b.ticks += 1
    if (b.ticks & 63) == 0 and time.perf_counter() > b.deadline:
        raise TemplateError(f"chat template exceeded its {b.time_limit:g} s render time limit")


def _max_len() -> int:
    b = _budget.get()
    return b.max_len if b is not None else BASE_MAX_LEN


def _check_len(n: int, what: str) -> None:
    cap = _max_len()
    if n > cap:
        raise TemplateError(f"chat template tried to build {what} of length {n:,} (limit {cap:,})")


def _check_result(value):
    if isinstance(value, (str, bytes, list, tuple, dict)):
        _check_len(len(value), "a value")
    return value


def _weight(value, cap: int) -> int:
    """Rough length of str(value), counting shared references each time (as str() would); stops past cap.

    Containers can hold the same big string many times over, so their len()
    says nothing about the text they turn into.
    """
    total, stack = 0, [value]
    while stack and total <= cap:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(v)
            stack.extend(v)
        elif isinstance(v, Mapping):
            total += 2 + 4 * len(v)
            for kv in v.items():
                stack.extend(kv)
        else:
            total += 8
    return total


def _check_text(value, what: str):
    """Refuse a value whose string form would exceed the cap, before anything stringifies it."""
    cap = _max_len()
    if isinstance(value, str):
        n = len(value)
    else:
        n = _weight(value, cap)
    if n > cap:
        raise TemplateError(f"chat template tried to turn {what} of length over {cap:,} into text")
    return value


# printf/format width or precision with many digits, or a '*' width taken from args
_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(\*|\d{6,})|%[-#0 +]*\d*\.(\*|\d{6,})")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*\d{6,}[^{}]*\}")


def _check_printf(fmt: str) -> None:
    if _PRINTF_WIDTH.search(fmt):
        raise TemplateError("chat template used a %-format width or precision that is too large or indirect")


def _check_int_args(args, kwargs, cap: int, what: str) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > cap:
            raise TemplateError(f"chat template passed {a} to {what} (limit {cap:,})")


def _estimate_join(sep, items) -> int | None:
    if isinstance(sep, str) and isinstance(items, (list, tuple)):
        return len(sep) * max(len(items) - 1, 0) + _weight(items, _max_len())
    return None


def _estimate_replace(s, old, new, count=-1) -> int | None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        hits = s.count(old) if old else len(s) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        return len(s) + hits * max(len(new) - len(old), 0)
    return None


# ---------------------------------------------------------------- environment


class _LoopGuard(NodeTransformer):
    """Rewrites the parsed template so loops and ``~`` report to the budget."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_localllm_iter", [], [], None, None, lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        node.nodes = [nodes.Filter(n, "_localllm_text", [], [], None, None, lineno=node.lineno) for n in node.nodes]
        return nodes.Filter(node, "_localllm_size", [], [], None, None, lineno=node.lineno)


@pass_context
def _guard_iter(_ctx, iterable):
    for item in iterable:
        _tick()
        yield item


@pass_context
def _guard_size(_ctx, value):
    _tick()
    return _check_result(value)


@pass_context
def _guard_text(_ctx, value):
    _tick()
    return _check_text(value, "a value")


def _finalize(value):
    """Runs on every {{ ... }} result before jinja calls str() on it."""
    _tick()
    return _check_text(value, "an output value")


# Filters that never turn their input into one big string; everything else
# gets its input's text size checked first.
_NON_TEXT_FILTERS = frozenset(
    "abs attr batch bool count d default dictsort first float groupby int items last length list map max min "
    "random reject rejectattr reverse round select selectattr slice sort sum unique".split()
)


def _wrap_filter(name: str, f):
    """Budget and size checks around a builtin filter.

    The wrapper takes the context, which also stops jinja from running the
    filter at compile time, outside any budget.
    """
    pass_arg = getattr(f, "jinja_pass_arg", None)
    pass_arg = getattr(pass_arg, "name", None)

    @pass_context
    def wrapped(ctx, value, *args, **kwargs):
        _tick()
        _check_int_args(args, kwargs, _max_len(), f"the {name!r} filter")
        if name not in _NON_TEXT_FILTERS:
            _check_text(value, f"the input of the {name!r} filter")
        est = None
        if name == "join":
            if not isinstance(value, (str, list, tuple)):
                value = list(value)  # sized below; ranges and generators are bounded by the range cap
            sep = args[0] if args else kwargs.get("d", "")
            est = _estimate_join(sep, value)
        elif name == "replace":
            est = _estimate_replace(value, *args[:3]) if len(args) >= 2 else None
        elif name == "indent" and isinstance(value, str):
            width = args[0] if args else kwargs.get("width", 4)
            w = len(width) if isinstance(width, str) else int(width)
            est = len(value) + w * (value.count("\n") + 1)
        elif name == "format" and isinstance(value, str):
            _check_printf(value)
        if est is not None:
            _check_len(est, f"the result of the {name!r} filter")
        if pass_arg == "context":
            out = f(ctx, value, *args, **kwargs)
        elif pass_arg == "eval_context":
            out = f(ctx.eval_ctx, value, *args, **kwargs)
        elif pass_arg == "environment":
            out = f(ctx.environment, value, *args, **kwargs)
        else:
            out = f(value, *args, **kwargs)
        return _check_result(out)

    return wrapped


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """HF's tojson: plain json.dumps (jinja's own escapes <, >, & and ' for HTML, which prompts must not)."""
    if isinstance(indent, int) and not isinstance(indent, bool) and indent > MAX_JSON_INDENT:
        raise TemplateError(f"tojson indent {indent} is too large (limit {MAX_JSON_INDENT})")
    if isinstance(indent, str) and len(indent) > MAX_JSON_INDENT:
        raise TemplateError("tojson indent string is too long")
    if separators is not None:
        separators = tuple(separators)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message="chat template raised an error"):
    raise TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return time.strftime(fmt)


class _GenerationBlock(Extension):
    """HF's ``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; here it just renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


_STR_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill"}


class _ChatSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self):
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            finalize=_finalize,
            extensions=["jinja2.ext.loopcontrols", _GenerationBlock],
        )
        for name in ("cycler", "lipsum", "joiner"):
            self.globals.pop(name, None)
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        self.filters = {n: _wrap_filter(n, f) for n, f in self.filters.items()}
        self.filters["tojson"] = _wrap_filter("tojson", _tojson)
        self.filters["_localllm_iter"] = _guard_iter
        self.filters["_localllm_size"] = _guard_size
        self.filters["_localllm_text"] = _guard_text

    def _parse(self, source, name, filename):
        return _LoopGuard().visit(super()._parse(source, name, filename))

    # -- attribute access: refuse loudly instead of rendering an Undefined

    def unsafe_undefined(self, obj, attribute):
        raise TemplateError(f"chat template tried to access unsafe attribute {attribute!r} of a {type(obj).__name__}")

    def getattr(self, obj, attribute):
        _tick()
        if isinstance(attribute, str) and attribute.startswith("_"):
            if isinstance(obj, Mapping) and attribute in obj:
                return obj[attribute]
            self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _tick()
        if isinstance(argument, str) and argument.startswith("_"):
            if isinstance(obj, Mapping) and argument in obj:
                return obj[argument]
            self.unsafe_undefined(obj, argument)
        return super().getitem(obj, argument)

    # -- operators and calls: check sizes before Python allocates

    def call_binop(self, context, operator, left, right):
        _tick()
        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        sized = (str, bytes, list, tuple)
        if operator == "*":
            if isinstance(left, sized) and is_int(right):
                _check_len(len(left) * max(right, 0), "a repeated sequence")
            elif isinstance(right, sized) and is_int(left):
                _check_len(len(right) * max(left, 0), "a repeated sequence")
            elif is_int(left) and is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateError("chat template built an integer that is too large")
        elif operator == "+":
            if isinstance(left, sized) and isinstance(right, sized):
                _check_len(len(left) + len(right), "a concatenation")
        elif operator == "**":
            if is_int(left) and is_int(right) and right > 0 and abs(left) > 1:
                if left.bit_length() * right > MAX_INT_BITS:
                    raise TemplateError("chat template built an integer that is too large")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
            _check_text(right, "a %-format argument")
        return self.binop_table[operator](left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (mirrors jinja's signature)
        _tick()
        target = getattr(__obj, "__wrapped__", __obj)  # sandbox-wrapped str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            est = None
            if name in _STR_WIDTH_METHODS:
                _check_int_args(args[:1], {}, _max_len(), f"str.{name}")
            elif name == "expandtabs":
                tab = args[0] if args else kwargs.get("tabsize", 8)
                est = len(owner) * max(int(tab), 1) if isinstance(tab, int) else None
            elif name == "join" and args:
                items = list(args[0])
                args = (items, *args[1:])
                est = _estimate_join(owner, items)
            elif name == "replace":
                est = _estimate_replace(owner, *args[:3]) if len(args) >= 2 else None
            elif name in ("format", "format_map"):
                if _FORMAT_WIDTH.search(owner):
                    raise TemplateError("chat template used a format width that is too large")
                _check_int_args(args, kwargs, MAX_FORMAT_WIDTH, f"str.{name}")
                _check_text([args, kwargs], f"the arguments of str.{name}")
            if est is not None:
                _check_len(est, f"the result of str.{name}")
        return _check_result(ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))


_ENV = _ChatSandbox()


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def _input_size(obj) -> int:
    try:
        return len(json.dumps(obj, default=str, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return len(str(obj))


# ---------------------------------------------------------------- public API


def render_chat(
    template: str,
    messages: list[dict],
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    *,
    time_limit: float = DEFAULT_TIME_LIMIT_S,
    **extra,
) -> str:
    """Render ``messages`` with a chat template, as HF's apply_chat_template(tokenize=False) would.

    ``extra`` becomes template variables (``tools``, ``documents``, custom
    flags). Any failure, refusal or timeout raises `TemplateError`.
    """
    if not isinstance(template, str):
        raise TemplateError(f"chat template must be a string, got {type(template).__name__}")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not all(
        isinstance(m, Mapping) for m in messages
    ):
        raise TemplateError("messages must be a list of dicts like {'role': ..., 'content': ...}")
    variables = dict(
        extra,
        messages=list(messages),
        add_generation_prompt=bool(add_generation_prompt),
        bos_token=bos_token,
        eos_token=eos_token,
    )
    budget = _Budget(time_limit, BASE_MAX_LEN + INPUT_LEN_FACTOR * _input_size(variables))
    token = _budget.set(budget)
    try:
        tmpl = _compile(template)
        parts, total = [], 0
        for chunk in tmpl.generate(**variables):
            total += len(chunk)
            _check_len(total, "output")
            _tick()
            parts.append(chunk)
        return "".join(parts)
    except TemplateError:
        raise
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template has a syntax error (line {e.lineno}): {e.message}") from e
    except RecursionError as e:
        raise TemplateError("chat template recursed too deeply") from e
    except MemoryError as e:
        raise TemplateError("chat template ran out of memory") from e
    except Exception as e:  # SecurityError, UndefinedError, TypeError, OverflowError from range()...
        raise TemplateError(f"chat template failed: {type(e).__name__}: {e}") from e
    finally:
        _budget.reset(token)


def chat_template_from_metadata(md: Mapping) -> str | None:
    """The model's ``tokenizer.chat_template``, or None when it has none."""
    t = md.get(CHAT_TEMPLATE_KEY) if md is not None else None
    if isinstance(t, (bytes, bytearray, memoryview)):
        t = bytes(t).decode("utf-8", errors="replace")
    if not isinstance(t, str) or not t.strip():
        return None
    return t


def template_or_fallback(md: Mapping) -> tuple[str, bool]:
    """(template, is_fallback): the model's template, else DEFAULT_CHATML with a warning."""
    t = chat_template_from_metadata(md)
    if t is not None:
        return t, False
    name = (md or {}).get("general.name") or "this model"
    warnings.warn(
        f"{name} has no {CHAT_TEMPLATE_KEY} in its metadata; using the default ChatML template, "
        "which may not match how the model was trained",
        UserWarning,
        stacklevel=2,
    )
    return DEFAULT_CHATML, True

