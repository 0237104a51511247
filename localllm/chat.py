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
* size-amplifying operations are estimated *before* they allocate, and every
  value a guarded operation makes is charged to a per-render allocation
  budget (see `localllm.chat_guard`): methods of builtin types and filters
  go through allow-lists, ``str.format`` fields are checked once their
  nested specs are filled in, ``%`` is parsed the way CPython parses it.

The template sees what Hugging Face's ``apply_chat_template`` provides:
``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``,
``raise_exception``, ``strftime_now``, an HF-style ``tojson`` filter, the
``loopcontrols`` extension and a pass-through ``{% generation %}`` block,
with ``trim_blocks`` and ``lstrip_blocks`` on.

Fallback: when a model's metadata has no ``tokenizer.chat_template``,
`template_or_fallback` returns `DEFAULT_CHATML` (the ChatML format llama.cpp
also falls back to) and warns in one line, since ChatML is only a guess for
such models.
"""

from __future__ import annotations

import json
import time
import types
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache, update_wrapper

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from . import chat_guard as guard
from .chat_guard import TemplateError

__all__ = [
    "TemplateError",
    "ChatTemplateWarning",
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

DEFAULT_TIME_LIMIT_S = 1.0


# ---------------------------------------------------------------- template rewriting


class _LoopGuard(NodeTransformer):
    """Rewrites the parsed template so loops, ``~``, slices, literals and filter blocks report to the budget."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = _filter(node.iter, "_localllm_iter")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        # all parts at once: a ~ b ~ c ... is one join, sized before it runs
        self.generic_visit(node)
        return _filter(nodes.List(node.nodes, lineno=node.lineno), "_localllm_concat")

    def visit_FilterBlock(self, node: nodes.FilterBlock) -> nodes.FilterBlock:
        # the block's result goes into a buffer without passing finalize
        self.generic_visit(node)
        node.filter = _filter(node.filter, "_localllm_new")
        return node

    def visit_Getitem(self, node: nodes.Getitem):
        # jinja compiles x[a:b] to plain Python slicing, past the sandbox's getitem
        self.generic_visit(node)
        return _filter(node, "_localllm_new") if isinstance(node.arg, nodes.Slice) else node

    def _literal(self, node):
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node
        return _filter(node, "_localllm_literal")

    visit_List = visit_Tuple = visit_Dict = _literal


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


# These take the context, which stops jinja from running them at compile time, outside any budget.


@pass_context
def _guard_iter(_ctx, iterable):
    for item in iterable:
        guard.tick()
        yield item


@pass_context
def _guard_concat(ctx, parts):
    guard.tick()
    total = sum(guard.check_text(p, "a value") for p in parts)
    guard.check_len(total, "a concatenation")
    join = markup_join if ctx.eval_ctx.autoescape else str_join
    return guard.produced(join(parts), "a concatenation")


@pass_context
def _guard_new(_ctx, value):
    guard.tick()
    return guard.produced(value)


@pass_context
def _guard_literal(_ctx, value):
    guard.tick()
    return guard.produced_container(value)


@pass_eval_context
def _finalize(eval_ctx, value):
    """Runs on every {{ ... }} result before jinja calls str() on it; what it returns may sit in a buffer."""
    guard.tick()
    return guard.emitted(value, "an output value", escaped=eval_ctx.autoescape)


def _wrap_filter(name: str, f):
    """Budget and size checks around a builtin filter: allow-listed, estimated where it can grow."""
    pass_arg = getattr(getattr(f, "jinja_pass_arg", None), "name", None)
    estimate = guard.FILTER_ESTIMATES.get(name)
    if estimate is None and name not in guard.LINEAR_FILTERS:

        def refused(*args, **kwargs):
            raise TemplateError(f"chat template used the {name!r} filter, which is not allowed")

        return pass_context(refused)

    @pass_context
    def wrapped(ctx, value, *args, **kwargs):
        guard.tick()
        for a in (*args, *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > guard.max_len():
                raise TemplateError(f"chat template passed {a} to the {name!r} filter (limit {guard.max_len():,})")
        if name not in guard.NON_TEXT_FILTERS:
            guard.check_text(value, f"the input of the {name!r} filter")
        if name == "join" and not isinstance(value, (str, list, tuple)):
            value = list(value)  # sized below; ranges and generators are bounded by the range cap
        if estimate is not None:
            guard.check_len(estimate(value, args, kwargs), f"the result of the {name!r} filter")
        if pass_arg == "context":
            out = f(ctx, value, *args, **kwargs)
        elif pass_arg == "eval_context":
            out = f(ctx.eval_ctx, value, *args, **kwargs)
        elif pass_arg == "environment":
            out = f(ctx.environment, value, *args, **kwargs)
        else:
            out = f(value, *args, **kwargs)
        return guard.produced(out, f"the result of the {name!r} filter")

    return wrapped


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """HF's tojson: plain json.dumps (jinja's own escapes <, >, & and ' for HTML, which prompts must not)."""
    # the filter wrapper has sized it with guard.estimate_json, which also refuses large indents
    if separators is not None:
        separators = tuple(separators)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message="chat template raised an error"):
    guard.check_text(message, "an error message")
    raise TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    # one directive ('%c') turns two characters into about twenty-five
    guard.check_len(16 * len(fmt) if isinstance(fmt, str) else 0, "the result of strftime_now")
    return time.strftime(fmt)


class _GenerationBlock(Extension):
    """HF's ``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; here it just renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_SEQUENCES = (str, bytes, bytearray, list, tuple)


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
        self.filters["_localllm_concat"] = _guard_concat
        self.filters["_localllm_new"] = _guard_new
        self.filters["_localllm_literal"] = _guard_literal

    def _parse(self, source, name, filename):
        return _LoopGuard().visit(super()._parse(source, name, filename))

    @staticmethod
    def concat(parts) -> str:
        """Joins a macro's, set block's or filter block's buffer: sized first, then charged."""
        parts = parts if isinstance(parts, list) else list(parts)
        guard.check_len(sum(map(len, parts)), "a block of output")
        return guard.produced("".join(parts), "a block of output")

    # -- attribute access: refuse loudly instead of rendering an Undefined

    def unsafe_undefined(self, obj, attribute):
        raise TemplateError(f"chat template tried to access unsafe attribute {attribute!r} of a {type(obj).__name__}")

    def getattr(self, obj, attribute):
        guard.tick()
        if isinstance(attribute, str) and attribute.startswith("_"):
            if isinstance(obj, Mapping) and attribute in obj:
                return obj[attribute]
            self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        guard.tick()
        if isinstance(argument, str) and argument.startswith("_"):
            if isinstance(obj, Mapping) and argument in obj:
                return obj[argument]
            self.unsafe_undefined(obj, argument)
        return super().getitem(obj, argument)

    def wrap_str_format(self, value):
        """str.format / format_map as a sandboxed formatter that sizes each field before formatting it."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)):
            return None
        if value.__name__ not in guard.FORMAT_METHODS:
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        if isinstance(owner, Markup):
            formatter = guard.GuardedEscapeFormatter(self, escape=owner.escape)
        else:
            formatter = guard.GuardedFormatter(self)
        is_map = value.__name__ == "format_map"

        def guarded_format(*args, **kwargs):
            if is_map:
                if kwargs or len(args) != 1:
                    raise TemplateError("format_map() takes exactly one mapping")
                args, kwargs = (), args[0]
            return type(owner)(formatter.vformat(owner, args, kwargs))

        return update_wrapper(guarded_format, value)

    # -- operators and calls: check sizes before Python allocates

    def call_binop(self, context, operator, left, right):
        guard.tick()
        if operator == "*":
            if isinstance(left, _SEQUENCES) and _is_int(right):
                guard.check_len(len(left) * max(right, 0), "a repeated sequence")
            elif isinstance(right, _SEQUENCES) and _is_int(left):
                guard.check_len(len(right) * max(left, 0), "a repeated sequence")
            elif _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > guard.MAX_INT_BITS:
                raise TemplateError("chat template built an integer that is too large")
        elif operator == "+":
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                guard.check_len(len(left) + len(right), "a concatenation")
        elif operator == "**":
            if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                if left.bit_length() * right > guard.MAX_INT_BITS:
                    raise TemplateError("chat template built an integer that is too large")
        elif operator == "%" and isinstance(left, (str, bytes, bytearray)):
            guard.check_printf(left, right, "a %-formatted string")
        return guard.produced(self.binop_table[operator](left, right), f"the result of {operator!r}")

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (mirrors jinja's signature)
        guard.tick()
        method = guard.builtin_method(__obj, args)
        if method is not None:
            kind, name, owner, margs = method
            if kind is str and name in guard.FORMAT_METHODS:
                # a format method that reached us without attribute access: sandbox it now
                if margs is not args:
                    raise TemplateError("chat template called str.format unbound, which is not allowed")
                __obj = __self.wrap_str_format(__obj)
            else:
                if name == "join" and margs and not isinstance(margs[0], (list, tuple)):
                    items = list(margs[0])  # sized next; a generator can only be read once
                    args = (*args[: len(args) - len(margs)], items, *margs[1:])
                    margs = (items, *margs[1:])
                guard.check_method(kind, name, owner, margs, kwargs)
        out = ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        return guard.produced(out, "a call result")


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
    token = guard.budget.set(guard.Budget(time_limit, _input_size(variables)))
    try:
        tmpl = _compile(template)
        parts, total = [], 0
        for chunk in tmpl.generate(**variables):
            total += len(chunk)
            guard.check_len(total, "output")
            guard.tick()
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
        guard.budget.reset(token)


def chat_template_from_metadata(md: Mapping) -> str | None:
    """The model's ``tokenizer.chat_template``, or None when it has none."""
    t = md.get(CHAT_TEMPLATE_KEY) if md is not None else None
    if isinstance(t, (bytes, bytearray, memoryview)):
        t = bytes(t).decode("utf-8", errors="replace")
    if not isinstance(t, str) or not t.strip():
        return None
    return t


# ---------------------------------------------------------------- fallback warning


class ChatTemplateWarning(UserWarning):
    """A model has no usable chat template; printed as one plain line, not Python's file:line + source."""


def _one_line_formatwarning(previous):
    def formatwarning(message, category, filename, lineno, line=None):
        if isinstance(category, type) and issubclass(category, ChatTemplateWarning):
            return f"localllm: warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    formatwarning.localllm_one_line = True
    return formatwarning


# Chains to whatever formatter was installed; installed once even if this module is reloaded.
if not getattr(warnings.formatwarning, "localllm_one_line", False):
    warnings.formatwarning = _one_line_formatwarning(warnings.formatwarning)


def template_or_fallback(md: Mapping) -> tuple[str, bool]:
    """(template, is_fallback): the model's template, else DEFAULT_CHATML with a one-line warning."""
    t = chat_template_from_metadata(md)
    if t is not None:
        return t, False
    name = (md or {}).get("general.name") or "this model"
    warnings.warn(
        f"{name} has no usable {CHAT_TEMPLATE_KEY} in its metadata; using the default ChatML template, "
        "which may not match how the model was trained",
        ChatTemplateWarning,
        stacklevel=2,
    )
    return DEFAULT_CHATML, True
