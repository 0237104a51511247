"""The Python API: `LLM` ties a GGUF file, its tokenizer, the model and a session together."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from . import arguments, hub
from .chat import render_chat, template_or_fallback
from .errors import ContextOverflow, GGUFError, UsageError
from .engine.engine import MAX_NUM_SEQS, Engine, RequestFailed
from .generation import PREFILL_CHUNK, Completion, Session, Stats
from .progress import ProgressPrinter
from .gguf import open_gguf
from .models import load_model
from .sampling import SamplingParams
from .speculative import DRAFT_MAX, SpeculativeConfig
from .threads import set_threads
from .tokenizer import tokenizer_from_metadata

Prompt = str | Sequence[int]
PROGRESS_MIN_PROMPTS = 32  # a list at least this long shows a progress bar (on a terminal)


def _collect(handle, with_logprobs: bool) -> Completion:
    """Wait for one engine request and gather its events into a Completion."""
    texts, tokens, lps = [], [], []
    for ev in handle.events():
        if ev.error is not None:
            raise RequestFailed(ev.error)
        texts.append(ev.step.text)
        if ev.step.token_id is not None:
            tokens.append(ev.step.token_id)
            if ev.logprob is not None:
                lps.append(ev.logprob)
        if ev.stats is not None:
            return Completion("".join(texts), tokens, ev.step.finish_reason, ev.stats,
                              lps if with_logprobs else None)
    raise RequestFailed("the engine stopped before the request finished")


class LLM:
    """A local model: `LLM("smollm2-135m")` or `LLM("path/to/model.gguf")`.

    speculative="lookup" guesses each request's next tokens from its own prompt and text
    (prompt lookup, at most draft_max at a time) and verifies them in one step; the tokens
    are the same as without it, and a governor turns guessing off where it does not pay.
    draft_model="name or path.gguf" guesses with a smaller model of the same vocabulary
    instead: greedy outputs stay the same tokens, sampled ones keep the model's distribution
    (the rejection rule) but not a seed's exact tokens."""

    def __init__(self, model: str | None = None, n_ctx: int = 2048, threads: int | None = None,
                 kv_dtype: str = "f16", progress: Callable[[str, int, int], None] | None = None,
                 max_num_seqs: int = MAX_NUM_SEQS, kv_cache_gb: float | None = None,
                 speculative: str | SpeculativeConfig | None = None, draft_max: int = DRAFT_MAX,
                 draft_model: str | None = None):
        self.path, self.gguf, self.tokenizer, self.model = self._load(model, progress)
        if not isinstance(n_ctx, int) or n_ctx < 1:
            raise UsageError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        self.n_ctx = n_ctx
        self.threads = set_threads(threads)
        self.kv_dtype = kv_dtype
        self.session = Session(self.model, n_ctx, kv_dtype, self.threads)
        self.max_num_seqs = arguments.check_int(max_num_seqs, "max_num_seqs")
        if self.max_num_seqs < 1:
            raise UsageError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        self.kv_cache_gb = kv_cache_gb
        self.speculative = self._speculative_config(speculative, draft_max, draft_model)
        self.draft_path = self.draft = None
        if draft_model is not None:
            self.draft_path, _, draft_tokenizer, self.draft = self._load(draft_model, progress)
            why = self.tokenizer.vocabulary_difference(draft_tokenizer)
            if why is not None:
                raise UsageError(f"draft model {self.draft_path.name} cannot draft for {self.path.name}: "
                                 f"its vocabulary is not the same ({why})")
        self._engine: Engine | None = None

    @staticmethod
    def _load(model: str | None, progress):
        """(path, GGUF file, tokenizer, model) for a name or path."""
        path = hub.resolve(model, progress=progress, quiet=progress is None)
        gguf_file = open_gguf(path)
        tokenizer = tokenizer_from_metadata(gguf_file.metadata)
        loaded = load_model(gguf_file)
        if tokenizer.vocab_size > loaded.cfg.vocab_size:
            raise GGUFError(f"the tokenizer has {tokenizer.vocab_size} tokens but the embedding only "
                            f"{loaded.cfg.vocab_size} rows")
        return path, gguf_file, tokenizer, loaded

    @staticmethod
    def _speculative_config(speculative, draft_max, draft_model) -> SpeculativeConfig | None:
        if isinstance(speculative, SpeculativeConfig):
            if (speculative.method == "draft") != (draft_model is not None):
                raise UsageError("speculative method 'draft' needs a draft_model, and a draft_model that method")
            return speculative
        if draft_model is not None:
            if speculative not in (None, "draft"):
                raise UsageError(f"draft_model drafts by itself; speculative={speculative!r} cannot go with it")
            speculative = "draft"
        if speculative is None:
            return None
        if speculative not in ("lookup", "draft"):
            raise UsageError(f"speculative must be 'lookup' (or give draft_model), got {speculative!r}")
        if speculative == "draft" and draft_model is None:
            raise UsageError("speculative='draft' needs draft_model")
        try:
            return SpeculativeConfig(speculative, arguments.check_int(draft_max, "draft_max"))
        except ValueError as e:
            raise UsageError(str(e)) from None

    @property
    def engine(self) -> Engine:
        """The batching engine every generation goes through; its KV pool is allocated on first use
        (n_ctx x max_num_seqs tokens, or kv_cache_gb) and refused up front if the machine lacks it."""
        if self._engine is None:
            self._engine = Engine(self.model, self.tokenizer, self.n_ctx, self.threads, self.max_num_seqs,
                                  self.kv_cache_gb, self.kv_dtype, speculative=self.speculative,
                                  draft_model=self.draft)
        return self._engine

    @property
    def engine_load(self):
        """The engine's occupancy (EngineLoad), or None when no engine runs; never starts one."""
        return self._engine.load if self._engine is not None else None

    def close(self) -> None:
        """Stop the engine thread (also done at exit); the LLM can start a new one later."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def warmup(self) -> None:
        """Start the engine, whose thread compiles (or loads) the kernels before anything else."""
        self.engine.call(lambda: None)

    def on_engine(self, fn: Callable, *args, **kwargs):
        """Run fn(*args, **kwargs) on the engine thread and return its result.

        Once the engine exists, every kernel call belongs on its thread: numba's OpenMP
        teams of two live threads slow each other down (measured on 2 cores: decode on a
        second thread ran at 42 t/s instead of 150 while the first thread's team lived)."""
        return self.engine.call(fn, *args, **kwargs)

    # ---- text <-> ids ---------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        text = arguments.check_text(text)
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        ids = arguments.check_ids(ids, self.model.cfg.vocab_size)
        return self.tokenizer.decode(list(ids))

    def prompt_ids(self, prompt: Prompt, special: bool = False) -> list[int]:
        """A completion prompt's ids: text is encoded (with BOS when the model wants it), ids are checked."""
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
        ids = arguments.check_prompt(ids, self.model.cfg.vocab_size, self.tokenizer.add_bos)
        ids = self.prompt_ids(ids)
        if len(ids) > self.n_ctx:
            raise ContextOverflow(f"{len(ids)} tokens do not fit in n_ctx {self.n_ctx}")
        if isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1:
            raise UsageError(f"n_batch must be a positive integer, got {n_batch!r}")
        return self.on_engine(self._score, ids, n_batch)

    def _score(self, ids: list[int], n_batch: int) -> np.ndarray:
        self.session.cache.clear()
        try:
            return self.session.feed(ids, logits_rows=list(range(len(ids))), n_batch=n_batch)
        finally:
            self.session.cache.clear()

    # ---- generation -----------------------------------------------------------

    def _params(self, **kw) -> SamplingParams:
        arguments.check_stop(kw.get("stop"))
        if isinstance(kw.get("stop"), str):
            kw["stop"] = (kw["stop"],)
        elif kw.get("stop") is None:
            kw["stop"] = ()
        return SamplingParams(**{k: v for k, v in kw.items() if v is not None or k == "seed"})

    def _check_fits(self, ids: list[int]) -> None:
        if len(ids) > self.n_ctx:
            raise ContextOverflow(f"prompt of {len(ids)} tokens does not fit in n_ctx {self.n_ctx}")

    def generate(self, prompt: Prompt | list[Prompt], max_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 seed: int | None = None, stop: str | Sequence[str] | None = None, logprobs: int | None = None,
                 **extra: Any):
        """Complete one prompt (-> Completion) or a list of prompts (-> list[Completion], in input
        order). A list runs batched in the engine; each answer is bit-identical to running it alone
        with the same seed. logprobs=N adds each token's logprob and the top N alternatives."""
        prompt = arguments.check_prompts(prompt, self.model.cfg.vocab_size, self.tokenizer.add_bos)
        if logprobs is not None:
            logprobs = arguments.check_int(logprobs, "logprobs")
            if logprobs < 0:
                raise UsageError(f"logprobs must be >= 0, got {logprobs}")
        params = self._params(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, **extra)
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            return self._complete_many([self.prompt_ids(p) for p in prompt], params, logprobs)
        return self._complete_many([self.prompt_ids(prompt)], params, logprobs)[0]

    def _complete_many(self, prompts: list[list[int]], params: SamplingParams,
                       logprobs: int | None = None) -> list[Completion]:
        for ids in prompts:  # refuse before anything runs
            self._check_fits(ids)
        handles = [self.engine.submit(ids, params, logprobs) for ids in prompts]
        progress = ProgressPrinter(unit="prompts") if len(prompts) >= PROGRESS_MIN_PROMPTS else None
        out = []
        for n, h in enumerate(handles):
            out.append(_collect(h, logprobs is not None))
            if progress:
                progress("generate", n + 1, len(handles))
        return out

    def stream(self, prompt: Prompt, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, seed: int | None = None,
               stop: str | Sequence[str] | None = None, stats: Stats | None = None, **extra: Any) -> Iterator[str]:
        """Yield UTF-8-safe text pieces as they are generated; stopping the iteration cancels it."""
        prompt = arguments.check_prompt(prompt, self.model.cfg.vocab_size, self.tokenizer.add_bos)
        params = self._params(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, **extra)
        ids = self.prompt_ids(prompt)
        self._check_fits(ids)
        handle = self.engine.submit(ids, params)
        events = handle.events()
        done = False

        def record(ev) -> None:
            if ev.stats is not None and stats is not None:
                stats.__dict__.update(ev.stats.__dict__)

        try:
            for ev in events:
                if ev.error is not None:
                    done = True
                    raise RequestFailed(ev.error)
                done = ev.stats is not None
                record(ev)
                if ev.step.text:
                    yield ev.step.text
        finally:
            if not done:  # stopped early: cancel, and the engine's final event still gives the stats
                handle.cancel()
                for ev in handle.events():  # a fresh reader: Ctrl-C may have ended the first one
                    record(ev)

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
        messages = arguments.check_messages(messages)
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
        messages = arguments.check_messages(messages)
        stop = kw.pop("stop", None)
        stop = (stop,) if isinstance(stop, str) else tuple(stop or ())
        params = self._params(max_tokens=max_tokens, temperature=temperature, stop=stop + self.chat_stops, **kw)
        ids = self.chat_ids(messages)
        return self._complete_many([ids], params)[0]

    # ---- evaluation -----------------------------------------------------------

    def perplexity(self, text: str, n_ctx: int = 512, progress: Callable[[str, int, int], None] | None = None) -> float:
        """llama.cpp's perplexity: non-overlapping n_ctx chunks, second half of each scored."""
        text, n_ctx = arguments.check_text(text), arguments.check_int(n_ctx, "n_ctx")
        from .perplexity import perplexity

        return self.on_engine(perplexity, self, text, n_ctx, progress)

    def __repr__(self) -> str:
        return f"LLM({str(self.path)!r}, arch={self.model.cfg.arch!r}, n_ctx={self.n_ctx})"
