"""OpenAI's response shapes: completions and chat, whole or as stream chunks, with logprobs."""

from __future__ import annotations

import time
import uuid

from ..engine.engine import TokenLogprob
from ..generation import Stats


def usage(stats: Stats) -> dict:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens}}


class ResponseFormat:
    """Builds one request's response objects; `chat` picks chat.completion over text_completion."""

    def __init__(self, chat: bool, model: str, tokenizer, n_top: int):
        self.chat, self.model, self.tokenizer, self.n_top = chat, model, tokenizer, n_top
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self._text_offset = 0  # completions' logprobs give each token's offset in the text

    def _envelope(self, chunk: bool) -> dict:
        obj = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _text(self, token_id: int) -> str:
        return self.tokenizer.token_bytes(token_id).decode("utf-8", "replace")

    def _token(self, token_id: int, logprob: float) -> dict:
        raw = self.tokenizer.token_bytes(token_id)
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}

    def logprobs(self, entries: list[TokenLogprob]) -> dict | None:
        """The choice's `logprobs` field for these tokens (None when none were asked for)."""
        if not entries:
            return None
        if self.chat:
            content = []
            for e in entries:
                item = self._token(e.token_id, e.logprob)
                item["top_logprobs"] = [self._token(t, lp) for t, lp in e.top[: self.n_top]]
                content.append(item)
            return {"content": content}
        tokens, offsets = [], []
        for e in entries:
            text = self._text(e.token_id)
            tokens.append(text)
            offsets.append(self._text_offset)
            self._text_offset += len(text)
        return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{self._text(t): lp for t, lp in e.top[: self.n_top]}
                                 for e in entries],
                "text_offset": offsets}

    def whole(self, text: str, entries: list[TokenLogprob] | None, finish_reason: str, stats: Stats) -> dict:
        lp = self.logprobs(entries) if entries is not None else None
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish_reason}
        return {**self._envelope(False), "choices": [choice], "usage": usage(stats)}

    def chunk(self, text: str | None, entries: list[TokenLogprob] | None = None,
              finish_reason: str | None = None, role: bool = False) -> dict:
        lp = self.logprobs(entries) if entries else None
        if self.chat:
            delta: dict = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": lp, "finish_reason": finish_reason}
        return {**self._envelope(True), "choices": [choice]}

    def usage_chunk(self, stats: Stats) -> dict:
        return {**self._envelope(True), "choices": [], "usage": usage(stats)}
