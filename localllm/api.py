"""The Python API: `LLM` ties a GGUF file, its tokenizer, the model and a session together."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from . import hub
from .chat import render_chat, template_or_fallback
from .errors import ContextOverflow, GGUFError, UsageError
from .generation import PREFILL_CHUNK, Completion, Session, Stats, iter_generate
from .gguf import open_gguf
from .models import load_model
from .sampling import SamplingParams
from .threads import set_threads
from .tokenizer import tokenizer_from_metadata

Prompt = str | Sequence[int]


class LLM:
    """A local model: `LLM("smollm2-135m")` or `LLM("path/to/model.gguf")`."""

    def __init__(self, model: str | None = None, n_ctx: int = 2048, threads: int | None = None,
                 kv_dtype: str = "f16", progress: Callable[[str, int, int], None] | None = None):
        self.path = hub.resolve(model, progress=progress, quiet=progress is None)
        self.gguf = open_gguf(self.path)
        self.tokenizer = tokenizer_from_metadata(self.gguf.metadata)
        self.model = load_model(self.gguf)
        if self.tokenizer.vocab_size > self.model.cfg.vocab_size:
            raise GGUFError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the embedding only "
                            f"{self.model.cfg.vocab_size} rows")
        if not isinstance(n_ctx, int) or n_ctx < 1:
            raise UsageError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        self.n_ctx = n_ctx
        self.threads = set_threads(threads)
        self.kv_dtype = kv_dtype
        self.session = Session(self.model, n_ctx, kv_dtype, self.threads)

    def warmup(self) -> None:
        """Run one token through a scratch cache so kernels are compiled (or loaded) now."""
        cache = self.model.new_cache(8, self.kv_dtype)
        self.model.forward([0], cache)

    # ---- text <-> ids ---------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def _prompt_ids(self, prompt: Prompt, special: bool = False) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_bos=self.tokenizer.add_bos, special=special)
        ids = [int(t) for t in prompt]
        vocab = self.model.cfg.vocab_size
        if any(not 0 <= t < vocab for t in ids):
            raise UsageError(f"prompt token ids must be in [0, {vocab})")
        return ids

    # ---- raw model ------------------------------------------------------------

    def logits(self, ids: Sequence[int], n_batch: int = PREFILL_CHUNK) -> np.ndarray:
        """float32 (len(ids), vocab): row i predicts token i+1, computed from an empty cache.

        n_batch (llama.cpp's -b) is how many tokens go through the model at once; the
        rows are bit-identical for every n_batch."""
        ids = self._prompt_ids(ids)
        if len(ids) > self.n_ctx:
            raise ContextOverflow(f"{len(ids)} tokens do not fit in n_ctx {self.n_ctx}")
        if isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1:
            raise UsageError(f"n_batch must be a positive integer, got {n_batch!r}")
        self.session.cache.clear()
        out = self.session.feed(ids, logits_rows=list(range(len(ids))), n_batch=n_batch)
        self.session.cache.clear()
        return out

    # ---- generation -----------------------------------------------------------

    def _params(self, **kw) -> SamplingParams:
        if isinstance(kw.get("stop"), str):
            kw["stop"] = (kw["stop"],)
        elif kw.get("stop") is None:
            kw["stop"] = ()
        return SamplingParams(**{k: v for k, v in kw.items() if v is not None or k == "seed"})

    def _steps(self, ids: list[int], params: SamplingParams, stats: Stats):
        return iter_generate(self.session, ids, params, self.tokenizer, stats)

    def generate(self, prompt: Prompt | list[Prompt], max_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 seed: int | None = None, stop: str | Sequence[str] | None = None, **extra: Any):
        """Complete one prompt (-> Completion) or a list of prompts (-> list[Completion])."""
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            return [self.generate(p, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty,
                                  seed, stop, **extra) for p in prompt]
        params = self._params(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, **extra)
        return self._complete(self._prompt_ids(prompt), params)

    def _complete(self, ids: list[int], params: SamplingParams) -> Completion:
        stats = Stats()
        texts, tokens, finish = [], [], "length"
        for step in self._steps(ids, params, stats):
            texts.append(step.text)
            if step.token_id is not None:
                tokens.append(step.token_id)
            if step.finish_reason:
                finish = step.finish_reason
        return Completion("".join(texts), tokens, finish, stats)

    def stream(self, prompt: Prompt, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, seed: int | None = None,
               stop: str | Sequence[str] | None = None, stats: Stats | None = None, **extra: Any) -> Iterator[str]:
        """Yield UTF-8-safe text pieces as they are generated."""
        params = self._params(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, **extra)
        for step in self._steps(self._prompt_ids(prompt), params, stats if stats is not None else Stats()):
            if step.text:
                yield step.text

    # ---- chat -----------------------------------------------------------------

    @property
    def chat_template(self) -> tuple[str, bool]:
        """(template, is_fallback); a model without one gets ChatML, with a warning once."""
        if not hasattr(self, "_chat_template"):
            self._chat_template = template_or_fallback(self.gguf.metadata)
        return self._chat_template

    @property
    def chat_stops(self) -> tuple[str, ...]:
        """Stop strings a chat needs beyond the model's end tokens: the fallback ChatML's
        markers, which a model not trained on them writes as text."""
        return ("<|im_end|>", "<|im_start|>") if self.chat_template[1] else ()

    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The model's chat template rendered for messages (sandboxed)."""
        template, _ = self.chat_template
        tok = self.tokenizer
        bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else ""
        eos = tok.token_text(tok.eos_id) if tok.eos_id is not None else ""
        return render_chat(template, messages, add_generation_prompt, bos_token=bos, eos_token=eos)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        text = self.chat_prompt(messages)
        tok = self.tokenizer
        # templates that write the BOS text themselves must not get a second BOS
        bos_text = tok.token_text(tok.bos_id) if tok.bos_id is not None else None
        add_bos = tok.add_bos and not (bos_text and text.startswith(bos_text))
        return tok.encode(text, add_bos=add_bos, special=True)

    def chat(self, messages: list[dict], max_tokens: int = 128, temperature: float = 0.8, **kw) -> Completion:
        """Answer a conversation [{"role", "content"}, ...] with the model's chat template."""
        stop = kw.pop("stop", None)
        stop = (stop,) if isinstance(stop, str) else tuple(stop or ())
        params = self._params(max_tokens=max_tokens, temperature=temperature, stop=stop + self.chat_stops, **kw)
        return self._complete(self.chat_ids(messages), params)

    # ---- evaluation -----------------------------------------------------------

    def perplexity(self, text: str, n_ctx: int = 512, progress: Callable[[str, int, int], None] | None = None) -> float:
        """llama.cpp's perplexity: non-overlapping n_ctx chunks, second half of each scored."""
        from .perplexity import perplexity

        return perplexity(self, text, n_ctx, progress)

    def __repr__(self) -> str:
        return f"LLM({str(self.path)!r}, arch={self.model.cfg.arch!r}, n_ctx={self.n_ctx})"
