"""Chat-template size guard: hostile payloads stay small in memory, estimates bound the real sizes."""

import json
import subprocess
import sys
import textwrap
import warnings

import pytest

from localllm.chat import TemplateError, render_chat, template_or_fallback
from localllm.chat_guard import format_field_estimate, printf_estimate

USER = [{"role": "user", "content": "hi"}]
N = 400_000_000  # each payload asks for about this much (1.6 GB as UCS-4 text) in one step
BIG = "{% set s = 'a' * 1000000 %}"
LIST = "{% set ns = namespace(l=[]) %}"

HOSTILE = {
    # byte-string methods
    "bytes.center": f"{{{{ 'a'.encode().center({N}) }}}}",
    "bytes.zfill": f"{{{{ 'a'.encode().zfill({N}) }}}}",
    "bytes.ljust": f"{{{{ 'a'.encode().ljust({N}) }}}}",
    "bytes.rjust": f"{{{{ 'a'.encode().rjust({N}) }}}}",
    "bytes.expandtabs": "{{ ('\t' * 1000).encode().expandtabs(400000) }}",
    "bytes.replace": "{{ ('a' * 100000).encode().replace('a'.encode(), ('a' * 100000).encode()) }}",
    "bytes.join": "{{ ('x' * 100000).encode().join([('a' * 100000).encode()] * 10000) }}",
    "bytes *": f"{{{{ 'a'.encode() * {N} }}}}",
    # str.format with the width in a nested field, as a string, or through format_map
    "format nested width str": f"{{{{ '{{:>{{w}}}}'.format('a', w='{N}') }}}}",
    "format bare nested width": f"{{{{ '{{:{{w}}}}'.format('a', w='{N}') }}}}",
    "format_map nested width": f"{{{{ '{{a:>{{w}}}}'.format_map({{'a': 'x', 'w': '{N}'}}) }}}}",
    "format nested precision": f"{{{{ '{{:.{{p}}f}}'.format(1.5, p={N}) }}}}",
    "format many fields": "{{ ('{0}' * 100000).format('a' * 100000) }}",
    # printf-style % and the format filter
    "% named width": f"{{{{ '%(a){N}s' % {{'a': 'x'}} }}}}",
    "% star width": f"{{{{ '%*s' % ({N}, 'a') }}}}",
    "% star precision": f"{{{{ '%.*f' % ({N}, 1.5) }}}}",
    "% many named fields": "{{ '%(a)s' * 100000 % {'a': 'x' * 100000} }}",
    "format filter named width": f"{{{{ '%(a){N}s'|format(a='x') }}}}",
    "format filter star width": f"{{{{ '%*s'|format({N}, 'a') }}}}",
    "format filter width": f"{{{{ '%{N}s'|format('a') }}}}",
    # other methods and filters that grow their output
    "str.translate": "{{ ('a' * 100000).translate({97: 'x' * 100000}) }}",
    "str.expandtabs": "{{ ('\t' * 100000).expandtabs(100000) }}",
    "int.to_bytes": f"{{{{ (5).to_bytes({N}, 'big')|length }}}}",
    "indent by string": "{{ ('a\n' * 1000)|indent('x' * 1000000) }}",
    "wordwrap wrapstring": "{{ ('a' * 1000000)|wordwrap(1, true, 'x' * 100000)|length }}",
    "tojson separators": "{{ (range(100000)|list)|tojson(separators=('x' * 100000, ':'))|length }}",
    "tojson deep indent": "{% set ns = namespace(a=[1] * 50000) %}{% for i in range(900) %}{% set ns.a = [ns.a] %}"
    "{% endfor %}{{ ns.a|tojson(indent=16)|length }}",
    "sum of lists": "{{ ([[0] * 10000] * 10000)|sum(start=[])|length }}",
    "urlize target": "{{ ('a.co ' * 100000)|urlize(target='x' * 100000)|length }}",
    "pprint": "{{ [[1]]|pprint }}",
    "slice count": "{{ [1]|slice(1000000)|list|length }}",
    "namespace repr": "{% set s = 'a' * 500000 %}{% set ns = namespace(a=s) %}{{ ([ns] * 800)|string|length }}",
    "~ chain": BIG + "{{ (" + "~".join(["s"] * 40) + ")|length }}",
    # many values that are each small enough
    "set block of one value": BIG + "{% set x %}{% for i in range(400) %}{{ s }}{% endfor %}{% endset %}{{ x|length }}",
    "set block of literal text": "{% set x %}{% for i in range(100000) %}" + "A" * 200
    + "{% endfor %}{% endset %}{{ x|length }}",
    "macro output": "{% macro m() %}{% for i in range(400) %}{{ 'a' * 1000000 }}{% endfor %}{% endmacro %}"
    "{{ m()|length }}",
    "call block results": BIG + "{% set x %}{% for i in range(400) %}{% call '{0}'.format(s) %}{% endcall %}"
    "{% endfor %}{% endset %}{{ x|length }}",
    "filter block results": "{% set x %}{% for i in range(400) %}{% filter center(1000000) %}{% endfilter %}"
    "{% endfor %}{% endset %}{{ x|length }}",
    "distinct copies in a list": BIG + LIST + "{% for i in range(400) %}{% set ns.l = [ns.l, s ~ i] %}{% endfor %}",
    "distinct slices in a list": BIG + LIST + "{% for i in range(400) %}{% set ns.l = [ns.l, s[i:]] %}{% endfor %}",
    "list + in a loop": BIG + LIST + "{% for i in range(400) %}{% set ns.l = ns.l + [s ~ i] %}{% endfor %}",
    "map center into a list": "{{ range(400)|map('center', 1000000)|list|length }}",
    "map center into join": "{{ range(400)|map('center', 1000000)|join|length }}",
    "split results in a list": "{% set s = 'ab,' * 330000 %}" + LIST
    + "{% for i in range(100) %}{% set ns.l = [ns.l, s.split(',')] %}{% endfor %}",
    "escaped output in a buffer": "{% set s = '&' * 1000000 %}{% set x %}{% autoescape true %}{% for i in range(400) %}"
    "{{ s }}{% endfor %}{% endautoescape %}{% endset %}{{ x|length }}",
    "dict.fromkeys": "{{ dict.fromkeys(range(100000), 'x' * 1000000)|string }}",
    "raise_exception message": BIG + "{{ raise_exception([s] * 1000) }}",
}

# Runs every payload in a fresh interpreter, under an address-space limit so a
# regression fails the test instead of swapping the machine, and reports the
# peak resident size growth over a warmed-up baseline.
_CHILD = textwrap.dedent(
    """
    import gc, json, resource, sys, time
    from localllm.chat import TemplateError, render_chat
    user = [{"role": "user", "content": "hi"}]
    payloads = json.loads(sys.stdin.read())
    render_chat("{{ ('x' * 10)|upper ~ '%s' % 1 ~ '{}'.format(2) }}", user)
    try:
        vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**30, resource.RLIM_INFINITY))
    except (OSError, StopIteration, ValueError):
        pass
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = {}
    for name, template in payloads.items():
        t = time.perf_counter()
        try:
            out = render_chat(template, user)
            results[name] = ["rendered", str(len(out))]
        except TemplateError as e:
            results[name] = ["TemplateError", str(e)]
        except BaseException as e:
            results[name] = [type(e).__name__, str(e)]
        results[name].append(time.perf_counter() - t)
        gc.collect()  # a refused render's traceback holds its frames until the cycle collector runs
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"results": results, "growth_mib": growth_kib / 1024}))
    """
)


@pytest.fixture(scope="module")
def hostile_run():
    # glibc: hand large freed blocks back to the OS, so one payload's leftovers do not inflate the next one's peak
    env = {"MALLOC_MMAP_THRESHOLD_": "131072", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], input=json.dumps(HOSTILE), capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_payload_is_refused_before_allocating(hostile_run, name):
    kind, message, seconds = hostile_run["results"][name]
    assert kind == "TemplateError", f"{name}: {kind}: {message}"
    assert "out of memory" not in message  # refused by an estimate or the budget, not by the allocator
    assert seconds < 1.5


def test_hostile_payloads_keep_the_peak_small(hostile_run):
    assert len(hostile_run["results"]) == len(HOSTILE)
    assert hostile_run["growth_mib"] < 100


def test_the_format_filter_is_printf_style_so_brace_widths_are_inert():
    assert render_chat("{{ '{:400000000}'|format }}", USER) == "{:400000000}"


# ---------------------------------------------------------------- estimates are upper bounds

PRINTF_CASES = [
    ("%s and %r", ("é" * 50, ["a", 1])),
    ("%(a)-12s|%(b)08.3f|%(c)x", {"a": "x", "b": 2.5, "c": 2**200}),
    ("%*d|%-*.*f", (20, -7, 9, 3, 1e300)),
    ("%c%c %% %-3c", ("z", 65, "q")),
    ("%10.4s|%+.20e|%#o", ("abcdefgh", 1.0 / 3, 8**40)),
    ("%d", 2**4000),
    ("%(k(x))s", {"k(x)": "nested key"}),
]


@pytest.mark.parametrize("fmt,args", PRINTF_CASES)
def test_printf_estimate_bounds_the_real_length(fmt, args):
    assert printf_estimate(fmt, args) >= len(fmt % args)


@pytest.mark.parametrize("fmt,args", [(b"%5s|%-3d|%b", (b"ab", 7, b"c")), (b"%(k)*s", {b"k": b"v"})])
def test_printf_estimate_reads_bytes_formats(fmt, args):
    if b"*" in fmt:
        with pytest.raises(TemplateError):
            printf_estimate(fmt, args)
    else:
        assert printf_estimate(fmt, args) >= len(fmt % args)


@pytest.mark.parametrize("fmt,args", [("%s %s", ("a",)), ("%(a)s", ("a",)), ("%(a)*s", {"a": 1}), ("%q", (1,))])
def test_printf_estimate_refuses_what_it_cannot_read(fmt, args):
    with pytest.raises(TemplateError):
        printf_estimate(fmt, args)


FORMAT_CASES = [
    ("a", ">30"), ("é" * 10, "*^25.3"), (2**300, ","), (2**300, "_b"), (-12345, "+#012x"),
    (1e308, ",.5f"), (1e-300, ".40e"), (0.5, "%"), (True, ">8"), ([1, "x"], ""), (7, "c"),
]


@pytest.mark.parametrize("value,spec", FORMAT_CASES)
def test_format_field_estimate_bounds_the_real_length(value, spec):
    assert format_field_estimate(value, spec) >= len(format(value, spec))


# ---------------------------------------------------------------- what stays allowed


BENIGN = [
    ("{{ '%5s|%-4d|%.2f|%*d' % ('x', 3, 2.345, 6, 42) }}", "%5s|%-4d|%.2f|%*d" % ("x", 3, 2.345, 6, 42)),
    ("{{ '{:>8}|{:^7.2f}|{k!r:<6}|{:{w}}'.format('ab', 3.14159, 5, k='q', w=4) }}",
     "{:>8}|{:^7.2f}|{k!r:<6}|{:{w}}".format("ab", 3.14159, 5, k="q", w=4)),
    ("{{ '{a}-{b[0]}'.format_map({'a': 1, 'b': [2]}) }}", "1-2"),
    ("{{ 'ab'.encode().center(6, '*'.encode()).decode() }}", b"ab".center(6, b"*").decode()),
    ("{{ 'a\tb'.expandtabs(4) ~ '7'.zfill(3) ~ 'x'.rjust(3) ~ 'abc'.replace('b', 'XY') }}",
     "a\tb".expandtabs(4) + "7".zfill(3) + "x".rjust(3) + "abc".replace("b", "XY")),
    ("{{ ', '.join(messages|map(attribute='role')) ~ ('abc'|center(7)) ~ ('a\nb'|indent(2)) }}",
     "user" + "abc".center(7) + "a\n  b"),
    ("{{ ('a b c d'|wordwrap(3)) ~ ([1, [2]]|tojson(indent=1)) ~ ([[1], [2]]|sum(start=[])|string) }}",
     "a b\nc d" + json.dumps([1, [2]], indent=1) + "[1, 2]"),
    ("{{ (5).to_bytes(2, 'big')|length }}{{ {}.fromkeys('ab')|list }}{{ 'abc'.translate({98: 'XY'}) }}",
     "2['a', 'b']aXYc"),
    ("{{ 'a-b'.split('-') }}{{ [1, 2][1:] }}{{ 'hello'[1:3] }}{{ (1, 2) + (3,) }}",
     "['a', 'b'][2]el(1, 2, 3)"),
]


@pytest.mark.parametrize("template,expected", BENIGN)
def test_ordinary_growing_operations_still_render(template, expected):
    assert render_chat(template, USER) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ (1).from_bytes('a'.encode(), 'big') }}",
        "{{ 'a'|urlize }}",
        "{{ 'a'.translate(none) }}",
        "{{ dict.fromkeys(range(3)|map('string')) }}",
    ],
)
def test_methods_and_filters_without_an_estimate_are_refused(template):
    with pytest.raises(TemplateError, match="not allowed|translate|without a length"):
        render_chat(template, USER, none=None)


def test_many_ordinary_copies_stay_within_the_budget():
    msgs = [{"role": "user", "content": "x" * 10_000}] * 200
    t = "{% for m in messages %}{{ '<' + m.role + '>' + m.content|trim + '</' ~ m.role ~ '>' }}{% endfor %}"
    assert len(render_chat(t, msgs)) == 200 * (10_000 + len("<user></user>"))


# ---------------------------------------------------------------- fallback warning


def test_fallback_warning_is_one_plain_line():
    for md in ({"general.name": "tiny"}, {"general.name": "tiny", "tokenizer.chat_template": 5}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            template_or_fallback(md)
        (w,) = caught
        text = warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
        assert text.startswith("localllm: warning: tiny has no usable tokenizer.chat_template")
        assert text.count("\n") == 1
    # other warnings keep Python's format
    other = warnings.formatwarning("x", UserWarning, "f.py", 3)
    assert other.startswith("f.py:3: UserWarning: x")


def test_fallback_warning_reaches_stderr_as_one_line():
    code = "from localllm.chat import template_or_fallback; template_or_fallback({'general.name': 'tiny'})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("localllm: warning: tiny has no")
