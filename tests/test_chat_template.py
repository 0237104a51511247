"""Chat templates: reference renderings, the sandbox, the render budget and the fallback."""

import json
import time
import warnings
from pathlib import Path

import gguf
import pytest

from localllm.chat import (
    DEFAULT_CHATML,
    TemplateError,
    chat_template_from_metadata,
    render_chat,
    template_or_fallback,
)

REFERENCE = json.loads((Path(__file__).parent / "reference" / "smollm2-135m-q4_1_chat.json").read_text())
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def smollm2_template(smollm2_path):
    field = gguf.GGUFReader(smollm2_path).fields["tokenizer.chat_template"]
    return field.contents()


@pytest.mark.parametrize("case", REFERENCE, ids=lambda c: c["messages"][-1]["content"][:20])
def test_smollm2_renderings_match_reference(smollm2_template, case):
    # SmolLM2's template uses neither token; the reference was rendered with HF's values.
    out = render_chat(smollm2_template, case["messages"], bos_token="<|im_start|>", eos_token="<|im_end|>")
    assert out == case["rendered"]


def test_without_generation_prompt(smollm2_template):
    case = REFERENCE[1]
    out = render_chat(smollm2_template, case["messages"], add_generation_prompt=False)
    assert out == case["rendered"].removesuffix("<|im_start|>assistant\n")


def test_default_chatml_matches_smollm2_when_a_system_message_is_given():
    case = next(c for c in REFERENCE if c["messages"][0]["role"] == "system")
    assert render_chat(DEFAULT_CHATML, case["messages"]) == case["rendered"]


# Published templates, as their models ship them (whitespace control included).
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": " Hi "},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]


def test_gemma3_template_renders_its_turn_format():
    out = render_chat(GEMMA3_TEMPLATE, CONVERSATION, bos_token="<bos>")
    assert out == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " look "}]}]
    assert render_chat(GEMMA3_TEMPLATE, parts, add_generation_prompt=False) == (
        "<start_of_turn>user\n<start_of_image>look<end_of_turn>\n"
    )


def test_llama3_template_renders_its_header_format():
    out = render_chat(LLAMA3_TEMPLATE, CONVERSATION, bos_token="<|begin_of_text|>")
    head = "<|start_header_id|>{}<|end_header_id|>\n\n"
    assert out == (
        "<|begin_of_text|>" + head.format("system") + "Be brief.<|eot_id|>" + head.format("user") + "Hi<|eot_id|>"
        + head.format("assistant") + "Hello!<|eot_id|>" + head.format("user") + "Bye<|eot_id|>" + head.format("assistant")
    )


def test_hf_features():
    t = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
        "{{ tools|tojson }}|{{ strftime_now('%Y')|length }}|{{ bos_token }}{{ eos_token }}"
    )
    msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    out = render_chat(t, msgs, bos_token="<s>", eos_token="</s>", tools=[{"name": "<f&g>", "x": "é"}])
    # HF's tojson does no HTML escaping and keeps non-ASCII.
    assert out == '[a][{"name": "<f&g>", "x": "é"}]|4|<s></s>'


def test_raise_exception_surfaces_the_template_message():
    t = "{% if messages[0].role != 'system' %}{{ raise_exception('System message required') }}{% endif %}"
    with pytest.raises(TemplateError, match="^System message required$"):
        render_chat(t, USER)


def test_syntax_error_and_bad_messages_are_template_errors():
    with pytest.raises(TemplateError, match="syntax"):
        render_chat("{% for %}", USER)
    with pytest.raises(TemplateError):
        render_chat(DEFAULT_CHATML, "hi")
    assert issubclass(TemplateError, ValueError)


SSTI = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ ''['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ messages|map(attribute='__class__')|list }}",
    "{{ messages.append(1) }}",
    "{{ messages[0].update({'role': 'x'}) }}",
    "{% include 'x.txt' %}",
]


@pytest.mark.parametrize("payload", SSTI)
def test_ssti_payloads_are_refused(payload):
    with pytest.raises(TemplateError):
        render_chat(payload, USER)


def test_refused_payload_executes_nothing():
    calls = []

    class Spy:
        def _run(self):
            calls.append("ran")

    for t in ("{{ spy._run() }}", "{{ spy['_run']() }}", "{{ spy|attr('_run') }}"):
        with pytest.raises(TemplateError):
            render_chat(t, USER, spy=Spy())
    assert calls == []


def test_dangerous_globals_are_not_exposed():
    out = render_chat("{{ cycler is defined }}{{ lipsum is defined }}{{ joiner is defined }}", USER)
    assert out == "FalseFalseFalse"


LOOPS = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set big = range(100000)|list %}{% for i in big %}{% for j in big %}{% for k in big %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
]


@pytest.mark.parametrize("template", LOOPS)
def test_runaway_templates_stop_within_the_time_limit(template):
    t = time.perf_counter()
    with pytest.raises(TemplateError):
        render_chat(template, USER, time_limit=0.3)
    assert time.perf_counter() - t < 1.5


def test_default_time_limit_is_under_two_seconds():
    t = time.perf_counter()
    with pytest.raises(TemplateError, match="time limit"):
        render_chat(LOOPS[0], USER)
    assert time.perf_counter() - t < 2.0


BOMBS = [
    "{% for i in range(10**12) %}x{% endfor %}",
    "{{ 'a' * 10**10 }}",
    "{{ [0] * 10**9 }}",
    "{{ 7 ** (10 ** 8) }}",
    "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{{ 'a'|center(10**10) }}",
    "{{ 'a'.ljust(10**10) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{:>9999999999}'.format(1) }}",
    "{{ ('a\n' * 100000)|indent(100000) }}",
    "{{ range(100000)|join('x' * 100000) }}",
    "{{ ('a' * 100000).replace('a', 'a' * 100000) }}",
    "{{ [1]|batch(10**10, 'x')|list }}",
    "{% set s = 'a' * 500000 %}{{ [s] * 1000 }}",
    "{% set s = 'a' * 500000 %}{{ ([s] * 1000)|tojson }}",
    "{% set s = 'a' * 500000 %}{% set ns = namespace(a=[s]) %}{% for i in range(40) %}"
    "{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}",
]


@pytest.mark.parametrize("template", BOMBS)
def test_size_bombs_are_refused_before_allocating(template):
    t = time.perf_counter()
    with pytest.raises(TemplateError):
        render_chat(template, USER)
    assert time.perf_counter() - t < 1.5


def test_long_conversations_still_render():
    msgs = [{"role": "user", "content": "x" * 400_000}, {"role": "assistant", "content": "y" * 400_000}] * 2
    out = render_chat(DEFAULT_CHATML, msgs)
    assert len(out) > 1_600_000


def test_fallback_warns_and_real_template_does_not():
    with pytest.warns(UserWarning, match="ChatML"):
        tmpl, is_fallback = template_or_fallback({"general.name": "tiny"})
    assert (tmpl, is_fallback) == (DEFAULT_CHATML, True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert template_or_fallback({"tokenizer.chat_template": "{{ 1 }}"}) == ("{{ 1 }}", False)
    assert chat_template_from_metadata({"tokenizer.chat_template": b"{{ 2 }}"}) == "{{ 2 }}"
    assert chat_template_from_metadata({"tokenizer.chat_template": "  "}) is None
