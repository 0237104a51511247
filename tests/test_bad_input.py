"""Bad input gets a clear error, or is made harmless, at the boundary it enters by.

API arguments of the wrong type or value raise usage errors that are also
TypeError/ValueError; text that cannot be UTF-8 encoded (invalid bytes on
stdin or in argv, lone surrogates) becomes U+FFFD; a KV cache larger than the
machine's memory is refused with one line. Everything runs on the tiny
synthetic model, so it is fast and nothing is hard-coded: expected outputs
come from the API.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import localllm._numba_setup  # noqa: F401  (sets NUMBA_CACHE_DIR here, as the CLI does)
from localllm import LLM, memory, repl
from localllm.errors import ArgumentError, ArgumentValueError, LocalLLMError, NotEnoughMemory
from localllm.kv_cache import KVCache
from localllm.repl import ChatLoop
from localllm.sampling import SamplingParams
from localllm.text_input import read_text, utf8_safe

from tiny_models import write_tiny_model

N_VOCAB = 300


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", n_vocab=N_VOCAB)


@pytest.fixture(scope="module")
def llm(tiny_path):
    return LLM(tiny_path, n_ctx=64)


def cli(*args, input=None, env=None):
    """Bytes in, bytes out: the test decides what is valid UTF-8."""
    e = dict(os.environ, PYTHONIOENCODING="utf-8", **(env or {}))
    return subprocess.run([sys.executable, "-m", "localllm", *args], input=input, capture_output=True,
                          timeout=300, env=e)


# ---- API arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("method, arg, kind, words", [
    ("generate", [1.5, 2.7], ArgumentError, "ints"),
    ("generate", None, ArgumentError, "a str or a list of token ids"),
    ("generate", b"abc", ArgumentError, "a str or a list of token ids"),
    ("generate", [True], ArgumentError, "bool"),
    ("generate", [5, N_VOCAB], ArgumentValueError, f"[0, {N_VOCAB})"),
    ("generate", [-1], ArgumentValueError, f"[0, {N_VOCAB})"),
    ("generate", [], ArgumentValueError, "empty"),
    ("generate", ["fine", 3.0], ArgumentError, "a str or a list of token ids"),
    ("stream", 42, ArgumentError, "a str or a list of token ids"),
    ("tokenize", b"abc", ArgumentError, "must be a str"),
    ("tokenize", None, ArgumentError, "must be a str"),
    ("detokenize", [1.5], ArgumentError, "ints"),
    ("detokenize", "abc", ArgumentError, "list of ints"),
    ("detokenize", [N_VOCAB + 5], ArgumentValueError, f"[0, {N_VOCAB})"),
    ("logits", [2.0, 3.0], ArgumentError, "ints"),
    ("chat", "hello", ArgumentError, "messages must be a list"),
    ("chat", [{"role": "user"}], ArgumentValueError, '"content"'),
    ("chat", [{"role": "user", "content": 5}], ArgumentError, "must be a str"),
    ("chat", ["hello"], ArgumentError, "must be a dict"),
    ("perplexity", b"some text", ArgumentError, "must be a str"),
])
def test_bad_arguments_raise_usage_errors_naming_what_is_accepted(llm, method, arg, kind, words):
    with pytest.raises(kind) as info:
        result = getattr(llm, method)(arg)
        if method == "stream":
            next(iter(result))
    err = info.value
    assert isinstance(err, LocalLLMError) and getattr(err, "exit_code") == 2
    assert isinstance(err, TypeError if kind is ArgumentError else ValueError)
    assert words in str(err), str(err)


@pytest.mark.parametrize("kw", [
    {"max_tokens": 0}, {"max_tokens": 2.5}, {"temperature": -1}, {"temperature": float("inf")},
    {"top_p": 0}, {"top_p": 1.5}, {"min_p": -0.1}, {"seed": -3}, {"stop": 5}, {"stop": [""]},
    {"repeat_penalty": 0},
])
def test_bad_sampling_numbers_are_usage_errors(llm, kw):
    with pytest.raises(LocalLLMError) as info:
        llm.generate("hi", **kw)
    assert isinstance(info.value, (TypeError, ValueError))
    name = next(iter(kw))
    assert name in str(info.value)


def test_other_integer_forms_of_token_ids_are_accepted(llm):
    ids = [5, 6, 7]
    expected = llm.generate(ids, max_tokens=3, temperature=0)
    for form in (tuple(ids), np.array(ids, dtype=np.int32), [np.int64(t) for t in ids]):
        got = llm.generate(form, max_tokens=3, temperature=0)
        assert got.token_ids == expected.token_ids
    batch = llm.generate([ids, "hi"], max_tokens=3, temperature=0)
    one = llm.generate("hi", max_tokens=3, temperature=0)
    assert [c.token_ids for c in batch] == [expected.token_ids, one.token_ids]
    assert llm.detokenize(np.array(expected.token_ids)) == llm.detokenize(expected.token_ids)


def test_context_beyond_the_training_length_is_still_allowed(tiny_path):
    # today's behaviour, kept: n_ctx may exceed the model's trained context (4096 for the tiny model)
    big = LLM(tiny_path, n_ctx=8192)
    assert big.n_ctx > big.model.cfg.n_ctx_train
    assert big.generate("hi", max_tokens=2, temperature=0).stats.completion_tokens == 2


# ---- text that is not valid UTF-8 -------------------------------------------------------------


def test_utf8_safe():
    assert utf8_safe("plain ascii and é 😀") == "plain ascii and é 😀"
    assert utf8_safe("a\udcff") == "a\ufffd"  # a surrogateescape'd byte
    assert utf8_safe(b"caf\xc3".decode("utf-8", "surrogateescape")) == "caf\ufffd"
    assert utf8_safe("x\ud800y") == "x\ufffdy"  # a lone high surrogate
    assert utf8_safe("\ud83d\ude00") == "😀"  # a surrogate pair is the character it encodes
    assert utf8_safe("a\udcff\ud800") == "a\ufffd\ufffd"
    for s in ("a\udcff", "x\ud800y", "\ud83d\ude00 \udc80"):
        utf8_safe(s).encode("utf-8")  # never raises


def test_read_text_replaces_invalid_bytes():
    stream = io.TextIOWrapper(io.BytesIO(b"ok \xff\xfe end"), encoding="utf-8")
    assert read_text(stream) == "ok \ufffd\ufffd end"
    assert read_text(io.StringIO("bad \udcff")) == "bad \ufffd"


@pytest.mark.filterwarnings("ignore:.*no usable tokenizer.chat_template")  # the tiny model gets ChatML
def test_api_text_with_surrogates_is_encoded_as_replacement(llm):
    assert llm.tokenize("a\udcff b") == llm.tokenize("a\ufffd b")
    assert llm.tokenize("\ud83d\ude00") == llm.tokenize("😀")
    expected = llm.generate("hi \ufffd", max_tokens=3, temperature=0)
    assert llm.generate("hi \udcff", max_tokens=3, temperature=0).token_ids == expected.token_ids
    turn = [{"role": "user", "content": "x\ud800"}]
    assert llm.chat_ids(turn) == llm.chat_ids([{"role": "user", "content": "x\ufffd"}])


def test_run_with_invalid_utf8_on_stdin(llm, tiny_path):
    r = cli("run", str(tiny_path), "-", "-n", "4", "--temp", "0", input=b"hi \xff\xfe there")
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
    expected = llm.generate("hi \ufffd\ufffd there", max_tokens=4, temperature=0).text + "\n"
    assert r.stdout.decode("utf-8") == expected


def test_run_and_tokenize_with_undecodable_argv(llm, tiny_path):
    prompt = b"caf\xe9 \xff"  # Latin-1, not UTF-8: Python passes it on as surrogateescape'd characters
    r = cli("run", str(tiny_path), prompt, "-n", "4", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode("utf-8") == llm.generate("caf\ufffd \ufffd", max_tokens=4, temperature=0).text + "\n"
    r = cli("tokenize", str(tiny_path), prompt)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == llm.tokenize("caf\ufffd \ufffd")


def test_chat_keeps_going_after_undecodable_input(llm, monkeypatch):
    lines = iter(["hello \udcff\udcfe", "/bye"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    monkeypatch.setattr(repl, "_setup_readline", lambda: None)  # keep the user's history file out of it
    loop = ChatLoop(llm, SamplingParams(temperature=0, max_tokens=3), out=io.StringIO(), err=io.StringIO())
    loop.run()
    assert loop.messages[0] == {"role": "user", "content": "hello \ufffd\ufffd"}
    assert "error" not in loop.err.getvalue()


@pytest.mark.parametrize("stdin_errors", ["surrogateescape", "strict"])
def test_chat_in_a_terminal_survives_invalid_bytes(tiny_path, tmp_path, stdin_errors):
    """Typed into a pty, as a person would; both of Python's ways of decoding stdin."""
    import pexpect

    # an empty LOCALLLM_HOME keeps the chat history apart; the kernel cache stays the usual one
    env = dict(os.environ, LOCALLLM_HOME=str(tmp_path), NUMBA_CACHE_DIR=os.environ["NUMBA_CACHE_DIR"], TERM="dumb",
               PYTHONIOENCODING=f"utf-8:{stdin_errors}")
    p = pexpect.spawn(sys.executable, ["-m", "localllm", "chat", str(tiny_path), "-n", "2", "--temp", "0"], env=env,
                      timeout=120)  # bytes in and out: what is typed need not be valid UTF-8
    try:
        p.expect_exact(b">>> ", timeout=300)  # a first run after a kernel edit compiles
        p.send(b"hello \xff\xfe there\n")
        p.expect_exact(b">>> ")
        saved = tmp_path / "conv.json"
        p.sendline(f"/save {saved}".encode())
        p.expect_exact(b">>> ")
        p.sendline(b"/bye")
        p.expect(pexpect.EOF)
    finally:
        p.close(force=True)
    assert p.exitstatus == 0
    messages = json.loads(saved.read_text(encoding="utf-8"))["messages"]
    assert messages[0] == {"role": "user", "content": "hello \ufffd\ufffd there"}


# ---- KV-cache memory preflight ---------------------------------------------------------------


def test_available_bytes_reads_meminfo(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    1234567 kB\n")
    assert memory.available_bytes(str(meminfo)) == 1234567 * 1024
    # no /proc/meminfo: free physical pages from sysconf; neither: unknown
    monkeypatch.setattr(memory.os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 10, "SC_PAGE_SIZE": 4096}[name])
    assert memory.available_bytes(str(tmp_path / "missing")) == 40960

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(memory.os, "sysconf", no_sysconf)
    assert memory.available_bytes(str(tmp_path / "missing")) is None


def test_kv_cache_larger_than_memory_is_refused(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)  # 1 MiB
    args = dict(n_layer=2, n_kv=2, dk=16, dv=16)  # 256 bytes per position in f16
    KVCache(n_ctx=2048, **args)  # 512 KiB fits
    with pytest.raises(NotEnoughMemory) as info:
        KVCache(n_ctx=8192, **args)  # 2 MiB does not
    msg = str(info.value)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, LocalLLMError)
    assert "8192-token context needs 2.0 MiB" in msg and "1.0 MiB available" in msg
    assert "-c" in msg and "4096 tokens would fit" in msg and "\n" not in msg
    # memory unknown: no preflight at all
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    assert KVCache(n_ctx=8192, **args).nbytes == 8192 * 256


def test_memory_error_in_the_allocation_gets_the_same_message(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    with pytest.raises(NotEnoughMemory, match="needs 1.0 GiB for the KV cache but allocating it failed"):
        with memory.kv_allocation(1 << 30, 1000):
            raise MemoryError("Unable to allocate 1 GiB")


def test_run_with_a_huge_context_is_one_line(tiny_path):
    r = cli("run", str(tiny_path), "hi", "-c", "1000000000000")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], r.stderr
    assert "KV cache" in lines[0] and "available" in lines[0] and "-c" in lines[0]
