"""`/stats` without an argument in `localllm chat`: the last answer's timings, or that there is none yet."""

from __future__ import annotations

import io
import re
import warnings

import pytest

from localllm import LLM
from localllm.repl import ChatLoop
from localllm.sampling import SamplingParams

from tiny_models import write_tiny_model

STATS = re.compile(r"^\[prompt (\d+) tok \((\d+) cached, (\d+) prefilled\), TTFT \d+ ms, prefill [0-9.]+ tok/s, "
                   r"decode [0-9.]+ tok/s, (\d+) tok\]$")


@pytest.fixture
def loop(tmp_path):
    llm = LLM(write_tiny_model(tmp_path / "tiny.gguf"), n_ctx=128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny model has no chat template: ChatML, with a warning
        llm.chat_template
    return ChatLoop(llm, SamplingParams(temperature=0, max_tokens=3), out=io.StringIO(), err=io.StringIO())


def said(loop) -> list[str]:
    lines = loop.err.getvalue().splitlines()
    loop.err.seek(0)
    loop.err.truncate()
    return lines


def test_stats_without_argument(loop):
    assert loop.command("/stats") is True
    assert said(loop) == ["[no answer yet]"]

    loop.answer("hello")
    said(loop)  # show_stats is off: answer() printed no timings
    loop.command("/stats")
    lines = said(loop)
    assert len(lines) == 1
    m = STATS.match(lines[0])
    assert m, lines
    s = loop.last_stats
    assert [int(g) for g in m.groups()] == [s.prompt_tokens, s.cached_tokens, s.prefilled_tokens,
                                             s.completion_tokens]

    # on/off and bad arguments behave as before
    loop.command("/stats on")
    assert loop.show_stats and said(loop) == []
    loop.command("/stats maybe")
    assert said(loop) == ["usage: /stats on|off"]
