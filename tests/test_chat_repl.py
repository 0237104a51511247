"""`localllm chat` as a person uses it: typed into a pseudo-terminal with pexpect.

The pty sessions run against the real smollm2-135m from an isolated
LOCALLLM_HOME (the cached model is symlinked in, nothing is downloaded) while
numba keeps using the normal kernel cache, so no kernels are recompiled.
Expected answers are never hard-coded: prompt sizes are recomputed through the
API (`LLM.chat_ids`) and state is checked through `/save`.

The ChatLoop unit tests at the bottom drive the loop object directly (no pty)
for the context-full and Ctrl-C paths.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pexpect
import pytest

import localllm._numba_setup  # noqa: F401  (sets NUMBA_CACHE_DIR in this process the way the CLI would)
from localllm import LLM, hub
from localllm.errors import ContextOverflow
from localllm.kv_cache import BLOCK_SIZE
from localllm.repl import ChatLoop
from localllm.sampling import SamplingParams

PROMPT = ">>> "
MORE = "... "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STATS = re.compile(r"\[prompt (\d+) tok \((\d+) cached, (\d+) prefilled\), TTFT \d+ ms, "
                   r"prefill [0-9.]+ tok/s, decode [0-9.]+ tok/s, (\d+) tok\]")
STARTUP_TIMEOUT = 300  # the first run after a kernel edit compiles kernels
TURN_TIMEOUT = 120


# ---- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm(smollm2_path):
    """For recomputing prompt sizes and for the ChatLoop unit tests."""
    return LLM(smollm2_path, n_ctx=512)


@pytest.fixture
def chat_home(tmp_path, smollm2_path):
    """An empty LOCALLLM_HOME holding only a link to the cached model."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    link = home / "models" / hub.CATALOG["smollm2-135m"].filename
    link.symlink_to(Path(smollm2_path).resolve())
    return home


class Chat:
    """One `localllm chat` process in a pty, typed into line by line."""

    def __init__(self, home: Path, *args: str):
        env = dict(os.environ)
        env.update(LOCALLLM_HOME=str(home), NUMBA_CACHE_DIR=os.environ["NUMBA_CACHE_DIR"], TERM="dumb",
                   PYTHONUNBUFFERED="1")
        self.home = home
        self.log = io.StringIO()
        self.p = pexpect.spawn(sys.executable, ["-m", "localllm", "chat", "smollm2-135m", *args], env=env,
                               encoding="utf-8", timeout=TURN_TIMEOUT, dimensions=(50, 400), cwd=str(home))
        self.p.logfile_read = self.log
        self.p.expect_exact("type /help for commands", timeout=STARTUP_TIMEOUT)
        self.p.expect_exact(PROMPT)

    def say(self, line: str) -> str:
        """Type a line, wait for the next prompt, return what was printed in between (minus the echo)."""
        self.p.sendline(line)
        self.p.expect_exact(PROMPT)
        out = ANSI.sub("", self.p.before).replace("\r\n", "\n").replace("\r", "")
        assert out.startswith(line), out  # the terminal echoed what was typed
        return out[len(line):].strip("\n")

    def stats(self, out: str) -> dict:
        found = STATS.findall(out)
        assert len(found) == 1, out
        prompt, cached, prefilled, completion = map(int, found[0])
        assert cached + prefilled == prompt, out
        return {"prompt": prompt, "cached": cached, "prefilled": prefilled, "completion": completion}

    def answer_text(self, out: str) -> str:
        return STATS.sub("", out).strip()

    def finish(self) -> int:
        self.p.expect(pexpect.EOF, timeout=TURN_TIMEOUT)
        self.p.close()
        assert self.p.signalstatus is None, self.transcript()
        return self.p.exitstatus

    def transcript(self) -> str:
        return ANSI.sub("", self.log.getvalue())

    def kill(self) -> None:
        if self.p.isalive():
            self.p.terminate(force=True)


@pytest.fixture
def start_chat(chat_home):
    chats = []

    def start(*args):
        c = Chat(chat_home, *args)
        chats.append(c)
        return c

    yield start
    for c in chats:
        c.kill()


# ---- the pty sessions -------------------------------------------------------------


def test_conversation_commands_and_prefix_cache(start_chat, chat_home, llm, tmp_path):
    c = start_chat("--temp", "0", "-n", "24")

    assert c.say("/stats on") == ""
    q1, q2 = "What is the capital of France?", "And of Italy?"
    out1 = c.say(q1)
    s1 = c.stats(out1)
    a1 = c.answer_text(out1)
    assert a1, out1
    turn1_ids = llm.chat_ids([{"role": "user", "content": q1}])
    assert s1["prompt"] == len(turn1_ids) and s1["cached"] == 0 and 1 <= s1["completion"] <= 24

    out2 = c.say(q2)
    s2 = c.stats(out2)
    assert c.answer_text(out2)
    # the second turn reuses the first one's full KV blocks from the engine's prefix cache
    # instead of prefilling them again
    assert s2["cached"] >= len(turn1_ids) // BLOCK_SIZE * BLOCK_SIZE > 0, (s1, s2)
    assert s2["cached"] % BLOCK_SIZE == 0 and s2["prefilled"] == s2["prompt"] - s2["cached"]

    # /save writes the conversation as JSON, exactly as the chat holds it
    saved = tmp_path / "conv.json"
    assert "[saved 4 messages" in c.say(f"/save {saved}")
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][0]["content"] == q1 and data["messages"][2]["content"] == q2
    assert data["messages"][1]["content"] == a1
    assert data["system"] is None
    # the prompt of turn 2 was exactly the re-rendered first turn plus the new message
    assert s2["prompt"] == len(llm.chat_ids(data["messages"][:3]))

    # /set: good values are accepted, bad ones give a usage/error line and change nothing
    assert c.say("/set temperature 0.5") == "[temperature = 0.5]"
    assert c.say("/set max_tokens 8") == "[max_tokens = 8]"
    assert c.say("/set nonsense 3").startswith("usage: /set ")
    assert c.say("/set temperature").startswith("usage: /set ")
    assert c.say("/set top_k many").startswith("cannot set top_k")
    assert c.say("/set max_tokens 0").startswith("cannot set max_tokens")
    assert c.say("/stats maybe") == "usage: /stats on|off"
    assert c.say("/frobnicate").startswith("unknown command /frobnicate")
    assert "/system TEXT" in c.say("/help")

    # the chat goes on after the bad commands, and max_tokens 8 is in force
    out3 = c.say("Name a colour.")
    s3 = c.stats(out3)
    assert 1 <= s3["completion"] <= 8
    assert s3["prompt"] == len(llm.chat_ids(data["messages"] + [{"role": "user", "content": "Name a colour."}]))

    # a missing or malformed file leaves the conversation as it was
    before = tmp_path / "before.json"
    c.say(f"/save {before}")
    assert c.say(f"/load {tmp_path / 'missing.json'}").startswith("cannot load")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert c.say(f"/load {tmp_path / 'bad.json'}").startswith("cannot load")
    (tmp_path / "wrong.json").write_text(json.dumps({"messages": [{"role": "user"}]}), encoding="utf-8")
    assert c.say(f"/load {tmp_path / 'wrong.json'}").startswith("cannot load")
    after = tmp_path / "after.json"
    c.say(f"/save {after}")
    assert json.loads(after.read_text()) == json.loads(before.read_text())
    assert len(json.loads(after.read_text())["messages"]) == 6

    # /clear forgets everything: the next prompt is a first turn again
    assert c.say("/clear") == "[conversation cleared]"
    assert c.say("/set temperature 0") == "[temperature = 0.0]"
    out4 = c.say(q1)
    s4 = c.stats(out4)
    assert s4["prompt"] == len(turn1_ids)
    # the prefix cache is keyed by content, so the first turn's blocks may serve again; that
    # cannot change the answer, as the next assertion shows
    # greedy and deterministic: the same first turn gives the same answer, cut at the new max_tokens
    a4 = c.answer_text(out4)
    assert a1.startswith(a4) and s4["completion"] == min(8, s1["completion"])

    # /load restores the saved conversation: the next prompt continues it
    assert f"[loaded 4 messages from {saved}]" in c.say(f"/load {saved}")
    out5 = c.say("Thanks!")
    s5 = c.stats(out5)
    assert s5["prompt"] == len(llm.chat_ids(data["messages"] + [{"role": "user", "content": "Thanks!"}]))

    # /system sets a system prompt and starts a new conversation
    system = "You are a pirate."
    assert c.say(f"/system {system}") == "[system prompt set]"
    s6 = c.stats(c.say("Hello"))
    assert s6["prompt"] == len(llm.chat_ids([{"role": "system", "content": system},
                                             {"role": "user", "content": "Hello"}]))
    sys_saved = tmp_path / "sys.json"
    c.say(f"/save {sys_saved}")
    sys_data = json.loads(sys_saved.read_text())
    assert sys_data["system"] == system and len(sys_data["messages"]) == 2

    # /stats off silences the stats line
    assert c.say("/stats off") == ""
    assert not STATS.search(c.say("Bye now"))

    c.p.sendline("/bye")
    assert c.finish() == 0
    # readline history was kept in $LOCALLLM_HOME
    history = (chat_home / "chat_history").read_text(encoding="utf-8")
    assert q1 in history and "/bye" in history


def test_multiline_ctrl_c_and_ctrl_d(start_chat, llm, tmp_path):
    c = start_chat("--temp", "0", "-n", "24", "--stats")

    # a message between lines of triple quotes is sent as one multi-line message
    c.p.sendline('"""')
    c.p.expect_exact(MORE)
    c.p.sendline("Here are two lines.")
    c.p.expect_exact(MORE)
    c.p.sendline("Repeat them back.")
    c.p.expect_exact(MORE)
    out = c.say('"""')
    s = c.stats(out)
    msg = "Here are two lines.\nRepeat them back."
    assert s["prompt"] == len(llm.chat_ids([{"role": "user", "content": msg}]))
    saved = tmp_path / "ml.json"
    c.say(f"/save {saved}")
    assert json.loads(saved.read_text())["messages"][0]["content"] == msg

    # Ctrl-C while the answer streams stops it, not the chat
    assert c.say("/set max_tokens 400") == "[max_tokens = 400]"
    long_q = "Write a very long story about a dragon who learns to cook."
    c.p.sendline(long_q)
    c.p.expect_exact(long_q)
    c.p.expect(r"\w+ \w+ \w+")  # tokens are streaming
    c.p.sendintr()
    c.p.expect_exact("[stopped]")
    c.p.expect_exact(PROMPT)
    s_stopped = c.stats(ANSI.sub("", c.p.before))
    assert 1 <= s_stopped["completion"] < 400

    # the partial answer is part of the conversation, and the chat goes on
    c.say(f"/save {saved}")
    msgs = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 2 and msgs[2]["content"] == long_q
    assert msgs[3]["content"].strip()
    assert c.say("/set max_tokens 8") == "[max_tokens = 8]"
    s_next = c.stats(c.say("Thank you."))
    assert s_next["prompt"] == len(llm.chat_ids(msgs + [{"role": "user", "content": "Thank you."}]))
    assert s_next["cached"] > 0

    # Ctrl-C at the prompt just gives a fresh prompt
    c.p.sendintr()
    c.p.expect_exact(PROMPT)
    assert c.say("/stats on") == ""

    # Ctrl-D leaves with status 0
    c.p.sendeof()
    assert c.finish() == 0, c.transcript()
    assert "Traceback" not in c.transcript()


# ---- ChatLoop directly -------------------------------------------------------------


def _loop(llm, max_tokens=16, **kw):
    return ChatLoop(llm, SamplingParams(temperature=0, max_tokens=max_tokens), out=io.StringIO(),
                    err=io.StringIO(), **kw)


@pytest.fixture(scope="module")
def small_llm(smollm2_path):
    return LLM(smollm2_path, n_ctx=128)


def test_context_full_drops_oldest_turns(small_llm):
    loop = _loop(small_llm, show_stats=True)
    questions = [f"Tell me one fact about the number {i}." for i in range(1, 6)]
    for q in questions:
        loop.answer(q)  # never raises
        s = loop.last_stats
        assert s.prompt_tokens + min(16, small_llm.n_ctx // 4) <= small_llm.n_ctx
        assert loop.messages[-2]["content"] == q and loop.messages[-1]["role"] == "assistant"
    err = loop.err.getvalue()
    assert re.search(r"\[context full: dropped the \d+ oldest turn\(s\)\]", err), err
    assert loop.messages[0]["content"] != questions[0]  # the oldest turn is gone
    assert [m["role"] for m in loop.messages] == ["user", "assistant"] * (len(loop.messages) // 2)


def test_message_too_long_for_context_keeps_history(small_llm):
    loop = _loop(small_llm)
    loop.answer("Hi.")
    history = [dict(m) for m in loop.messages]
    with pytest.raises(ContextOverflow):
        loop.answer("word " * 300)
    assert loop.messages == history  # the failed message neither stays nor costs the earlier turns
    assert "[context full" not in loop.err.getvalue()
    loop.answer("Hi again.")  # and the chat goes on
    assert len(loop.messages) == 4


class _InterruptAfter(io.StringIO):
    """An output stream on which Ctrl-C arrives after n writes."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def write(self, s):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt
        return super().write(s)


def test_interrupted_answer_then_cached_turn_matches_cold_run(llm):
    loop = ChatLoop(llm, SamplingParams(temperature=0, max_tokens=64), out=_InterruptAfter(6),
                    err=io.StringIO())
    loop.answer("Write a poem about the sea.")
    assert "[stopped]" in loop.err.getvalue()
    partial = loop.messages[-1]["content"]
    assert partial and loop.last_stats.completion_tokens < 64

    loop.out = io.StringIO()
    loop.params = SamplingParams(temperature=0, max_tokens=12)
    warm = loop.answer("Now a shorter one.")
    assert loop.last_stats.cached_tokens > 0
    # the KV blocks left behind by the interrupted turn give the same answer as a cold start
    fresh = LLM(llm.path, n_ctx=llm.n_ctx)
    try:
        cold = fresh.chat(loop.messages[:-1], max_tokens=12, temperature=0)
    finally:
        fresh.close()
    assert cold.stats.cached_tokens == 0
    assert warm == cold.text


def test_save_load_round_trip_and_bad_files(llm, tmp_path):
    loop = _loop(llm)
    loop.system = "Be brief."
    loop.messages = [{"role": "user", "content": "ça va? 🙂"}, {"role": "assistant", "content": "Oui.\nEt toi?"}]
    good = tmp_path / "good.json"
    loop.command(f"/save {good}")
    other = _loop(llm)
    other.command(f"/load {good}")
    assert (other.system, other.messages) == (loop.system, loop.messages)

    bad_files = ['[1, 2]', '{}', '{"messages": "abc"}', '{"system": 5, "messages": []}',
                 '{"messages": [{"role": "robot", "content": "x"}]}', '{"messages": [{"role": "user", "content": 3}]}',
                 '\xff\xfe not utf-8']
    for i, text in enumerate(bad_files):
        f = tmp_path / f"bad{i}.json"
        f.write_bytes(text.encode("latin-1"))
        other.command(f"/load {f}")
        assert other.err.getvalue().splitlines()[-1].startswith(f"cannot load {f}"), text
        assert (other.system, other.messages) == (loop.system, loop.messages), text

    # a save that fails says so and leaves nothing behind
    (tmp_path / "adir").mkdir()
    loop.command(f"/save {tmp_path / 'adir'}")
    assert loop.err.getvalue().splitlines()[-1].startswith("cannot save")
    assert not list(tmp_path.glob("*.tmp"))
    for cmd in ("/save", "/load"):
        loop.command(cmd)
        assert loop.err.getvalue().splitlines()[-1] == f"usage: {cmd} FILE"
