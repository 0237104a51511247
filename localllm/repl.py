"""The interactive `localllm chat` loop.

The conversation is re-rendered with the model's chat template every turn and
answered through the engine, like every other request; its prefix cache still
holds the earlier turns' KV blocks, so only the tokens after the last shared
full block are prefilled. When the context fills up, the oldest turns are
dropped (and the user is told), never a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from dataclasses import fields, replace
from pathlib import Path

from .errors import ContextOverflow, LocalLLMError
from .generation import Stats
from .sampling import SamplingParams
from .text_input import replace_undecodable_input, utf8_safe

HELP = """commands:
  /help                      this text
  /bye                       leave (Ctrl-D too)
  /clear                     forget the conversation
  /system TEXT               set the system prompt (clears the conversation)
  /set NAME VALUE            NAME is temperature, top_k, top_p, min_p, seed or max_tokens
  /stats                     timings of the last answer
  /stats on|off              print timings after each answer
  /save FILE, /load FILE     the conversation as JSON
  \"\"\"                        start or end a multi-line message
Ctrl-C stops an answer without leaving the chat."""

SETTABLE = {"temperature": float, "top_k": int, "top_p": float, "min_p": float, "seed": int, "max_tokens": int}


def _history_file() -> Path:
    from .hub import home

    return home() / "chat_history"


def _setup_readline():
    """Arrow keys and persistent history where the platform has readline."""
    try:
        import readline
    except ImportError:
        return None
    path = _history_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)
    return readline


def _ctrl_c_interrupts() -> None:
    """Ctrl-C stops an answer even when the chat was started with SIGINT ignored (a background
    job of a non-interactive shell, nohup...): Python then installs no KeyboardInterrupt."""
    if sys.stdin.isatty() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


class ChatLoop:
    def __init__(self, llm, params: SamplingParams, show_stats: bool = False, out=None, err=None):
        self.llm = llm
        self.params = params
        self.show_stats = show_stats
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.system: str | None = None
        self.messages: list[dict] = []
        self.last_stats: Stats | None = None

    # ---- helpers --------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def conversation(self, messages: list[dict] | None = None) -> list[dict]:
        sys_msg = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msg + (self.messages if messages is None else messages)

    def _fit_ids(self) -> list[int]:
        """Prompt ids for the conversation, dropping the oldest turns until they fit."""
        reserve = min(self.params.max_tokens, self.llm.n_ctx // 4)
        msgs = self.messages
        dropped = 0
        while True:
            ids = self.llm.chat_ids(self.conversation(msgs))
            if len(ids) + reserve <= self.llm.n_ctx or len(msgs) <= 1:
                break
            msgs = msgs[2:] if len(msgs) > 2 else msgs[1:]
            dropped += 1
        if len(ids) >= self.llm.n_ctx:
            # nothing is dropped for a message that cannot fit even alone
            raise ContextOverflow(f"this message alone ({len(ids)} tokens) does not fit in n_ctx {self.llm.n_ctx}")
        if dropped:
            self.messages = msgs
            self.say(f"[context full: dropped the {dropped} oldest turn(s)]")
        return ids

    # ---- one turn -------------------------------------------------------------

    def answer(self, user_text: str) -> str:
        self.messages.append({"role": "user", "content": user_text})
        try:
            ids = self._fit_ids()
        except LocalLLMError:
            self.messages.pop()
            raise
        stats = Stats()
        room = self.llm.n_ctx - len(ids)
        params = replace(self.params, max_tokens=max(1, min(self.params.max_tokens, room)),
                         stop=tuple(self.params.stop) + self.llm.chat_stops)
        pieces = []
        sampling = {f.name: getattr(params, f.name) for f in fields(params)}
        try:  # closing: an interrupted answer is cancelled in the engine at once
            with contextlib.closing(self.llm.stream(ids, stats=stats, **sampling)) as stream:
                for text in stream:
                    pieces.append(text)
                    self.out.write(text)
                    self.out.flush()
        except KeyboardInterrupt:
            self.say("\n[stopped]")
        self.out.write("\n")
        self.out.flush()
        text = "".join(pieces)
        if not text:  # stopped before any answer: forget the question too, so turns keep alternating
            self.messages.pop()
            self.last_stats = stats
            return text
        self.messages.append({"role": "assistant", "content": text})
        self.last_stats = stats
        if self.show_stats:
            self.say(self.stats_line(stats))
        return text

    @staticmethod
    def stats_line(s: Stats) -> str:
        return (f"[prompt {s.prompt_tokens} tok ({s.cached_tokens} cached, {s.prefilled_tokens} prefilled), "
                f"TTFT {s.time_to_first_token_s * 1000:.0f} ms, prefill {s.prefill_tokens_per_s:.1f} tok/s, "
                f"decode {s.decode_tokens_per_s:.1f} tok/s, {s.completion_tokens} tok]")

    # ---- commands -------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a slash command; return False when the chat should end."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("bye", "exit", "quit"):
            return False
        if name == "help":
            self.say(HELP)
        elif name == "clear":
            self.messages = []
            self.say("[conversation cleared]")
        elif name == "system":
            self.system = arg or None
            self.messages = []
            self.say("[system prompt set]" if arg else "[system prompt removed]")
        elif name == "set":
            self._set(arg)
        elif name == "stats":
            if not arg:
                self.say(self.stats_line(self.last_stats) if self.last_stats else "[no answer yet]")
            elif arg not in ("on", "off"):
                self.say("usage: /stats on|off")
            else:
                self.show_stats = arg == "on"
        elif name == "save":
            self._save(arg)
        elif name == "load":
            self._load(arg)
        else:
            self.say(f"unknown command /{name}; /help lists them")
        return True

    def _set(self, arg: str) -> None:
        key, _, value = arg.partition(" ")
        if key not in SETTABLE or not value.strip():
            self.say(f"usage: /set {'|'.join(SETTABLE)} VALUE")
            return
        try:
            self.params = replace(self.params, **{key: SETTABLE[key](value.strip())})
        except (ValueError, LocalLLMError) as e:
            self.say(f"cannot set {key}: {e}")
            return
        self.say(f"[{key} = {getattr(self.params, key)}]")

    def _save(self, arg: str) -> None:
        if not arg:
            self.say("usage: /save FILE")
            return
        data = {"system": self.system, "messages": self.messages}
        path = Path(arg).expanduser()
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:
            try:
                tmp.unlink(missing_ok=True)  # no half-written leftovers
            except OSError:
                pass
            self.say(f"cannot save to {path}: {e.strerror}")
            return
        self.say(f"[saved {len(self.messages)} messages to {path}]")

    def _load(self, arg: str) -> None:
        if not arg:
            self.say("usage: /load FILE")
            return
        path = Path(arg).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a saved conversation")
            msgs = data["messages"]
            if not isinstance(data.get("system"), (str, type(None))):
                raise ValueError("system must be a string or null")
            if not isinstance(msgs, list) or not all(
                    isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")
                    and isinstance(m.get("content"), str) for m in msgs):
                raise ValueError("messages must be {role, content} objects")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.say(f"cannot load {path}: {getattr(e, 'strerror', None) or e}")
            return  # the current conversation is kept as it was
        self.system = data.get("system")
        self.messages = msgs
        self.say(f"[loaded {len(msgs)} messages from {path}]")

    # ---- the loop -------------------------------------------------------------

    def read_message(self) -> str | None:
        """One user message (multi-line between triple quotes); None at end of input.

        Undecodable input bytes arrive as U+FFFD (`run` sets stdin to errors="replace"),
        or as lone surrogates where Python escapes them; utf8_safe makes those U+FFFD too."""
        line = utf8_safe(input(">>> "))
        if line.strip() != '"""':
            return line
        lines = []
        while True:
            more = utf8_safe(input("... "))
            if more.strip() == '"""':
                return "\n".join(lines)
            lines.append(more)

    def run(self) -> None:
        replace_undecodable_input()  # a stray invalid byte must not end the chat
        _ctrl_c_interrupts()
        rl = _setup_readline()
        self.say("type /help for commands, /bye to leave")
        try:
            while True:
                try:
                    msg = self.read_message()
                except KeyboardInterrupt:
                    self.out.write("\n")
                    continue
                except EOFError:
                    self.out.write("\n")
                    break
                if not msg.strip():
                    continue
                if msg.startswith("/"):
                    if not self.command(msg.strip()):
                        break
                    continue
                try:
                    self.answer(msg)
                except LocalLLMError as e:
                    self.say(f"error: {e}")
        finally:
            if rl is not None:
                try:
                    rl.write_history_file(_history_file())
                except OSError:
                    pass
