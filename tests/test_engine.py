"""The engine: batched requests give exactly what each gives alone.

A request's logprobs are compared with ==, not a tolerance: the forward pass
has one arithmetic per row and each request has its own seeded sampler, so
whatever shares its steps (other requests, where its prefill is cut, prefix
cache hits, preemption and recompute) must change no bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from localllm import LLM
from localllm.engine.engine import Engine
from localllm.errors import ContextOverflow
from localllm.sampling import SamplingParams
from tiny_models import write_tiny_model


def _signature(c):
    """Everything a request's answer is: tokens, text, finish, and each token's logprobs."""
    lps = [(lp.token_id, lp.logprob, tuple(lp.top)) for lp in c.logprobs]
    return c.token_ids, c.text, c.finish_reason, lps


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    path = write_tiny_model(tmp_path_factory.mktemp("engine") / "llama.gguf", "llama", Q.Q8_0, n_layer=2,
                            n_vocab=300, seed=11)
    llm = LLM(str(path), n_ctx=512, max_num_seqs=16)
    yield llm
    llm.close()


def _prompts(n, seed=0, shared=0):
    rng = np.random.default_rng(seed)
    head = rng.integers(2, 300, shared).tolist()
    return [head + rng.integers(2, 300, int(rng.integers(1, 90))).tolist() for _ in range(n)]


def _alone(llm, prompts, **kw):
    return [_signature(llm.generate(p, **kw)) for p in prompts]


def _engine_run(llm, prompts, params_of, **engine_kw):
    """Run prompts together on a separate engine; returns (signatures, engine)."""
    eng = Engine(llm.model, llm.tokenizer, llm.n_ctx, llm.threads, **engine_kw)
    try:
        handles = [eng.submit(p, params_of(i), logprobs=3) for i, p in enumerate(prompts)]
        from localllm.api import _collect

        return [_signature(_collect(h, True)) for h in handles], eng
    finally:
        eng.close()


def test_batch_of_16_equals_each_alone(tiny_llm):
    prompts = _prompts(16, seed=1)
    kw = dict(max_tokens=12, temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, logprobs=3)
    alone = [_signature(tiny_llm.generate(p, seed=i, **kw)) for i, p in enumerate(prompts)]
    params = [SamplingParams(max_tokens=12, temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, seed=i)
              for i in range(16)]
    batched, _ = _engine_run(tiny_llm, prompts, lambda i: params[i], max_num_seqs=16)
    assert batched == alone
    # the list API: input order, one seed for every prompt
    together = tiny_llm.generate(prompts[:5], seed=3, **kw)
    assert [_signature(c) for c in together] == [_signature(tiny_llm.generate(p, seed=3, **kw)) for p in prompts[:5]]


def test_shared_prefixes_and_chunk_boundaries_change_nothing(tiny_llm):
    prompts = _prompts(6, seed=2, shared=70)
    params = lambda i: SamplingParams(max_tokens=8, temperature=0.7, seed=100 + i)  # noqa: E731
    base, _ = _engine_run(tiny_llm, prompts[:1], params, max_num_seqs=1)
    alone = [_engine_run(tiny_llm, [p], lambda _i, i=i: params(i), max_num_seqs=1)[0][0]
             for i, p in enumerate(prompts)]
    assert alone[0] == base[0]
    for budget in (16, 37, 512):  # where the scheduler cuts each prefill
        got, _ = _engine_run(tiny_llm, prompts, params, max_num_seqs=6, max_num_batched_tokens=budget)
        assert got == alone, f"max_num_batched_tokens={budget}"


def test_preemption_and_recompute_change_nothing(tiny_llm):
    prompts = _prompts(8, seed=3)
    params = lambda i: SamplingParams(max_tokens=40, temperature=0.8, seed=i)  # noqa: E731
    roomy, _ = _engine_run(tiny_llm, prompts, params, max_num_seqs=8)
    block_bytes = 2 * 2 * 2 * 32 * (16 + 16)  # f16, 2 layers, 2 KV heads, 32 positions, dk + dv
    tight, eng = _engine_run(tiny_llm, prompts, params, max_num_seqs=8, kv_cache_gb=12 * block_bytes / (1 << 30))
    assert eng.preemptions > 0
    assert tight == roomy


def test_prefix_cache_skips_the_shared_part(tiny_llm):
    rng = np.random.default_rng(4)
    prefix = rng.integers(2, 300, 400).tolist()
    first = tiny_llm.generate(prefix + [5, 6, 7], max_tokens=2, temperature=0)
    second = tiny_llm.generate(prefix + [9, 10], max_tokens=2, temperature=0)
    assert first.stats.cached_tokens == 0
    assert second.stats.cached_tokens == 384  # the 12 full 32-token blocks of the prefix
    assert second.stats.prefilled_tokens == 402 - 384
    # and a cache hit gives the same answer as computing everything
    fresh = LLM(str(tiny_llm.path), n_ctx=512)
    try:
        assert _signature(fresh.generate(prefix + [9, 10], max_tokens=2, temperature=0, logprobs=2)) == \
            _signature(tiny_llm.generate(prefix + [9, 10], max_tokens=2, temperature=0, logprobs=2))
    finally:
        fresh.close()


def test_request_that_can_never_fit_fails_while_others_finish(tiny_llm):
    eng = Engine(tiny_llm.model, tiny_llm.tokenizer, 512, tiny_llm.threads, max_num_seqs=4,
                 kv_cache_gb=4 * 8192 / (1 << 30))  # 4 blocks: 128 positions
    try:
        params = SamplingParams(max_tokens=5, temperature=0)
        ok = eng.submit([3, 4, 5], params)
        big = eng.submit(list(range(2, 202)), params)
        ok2 = eng.submit([7, 8], params)
        events = list(big.events())
        assert events[-1].error is not None and "KV blocks" in events[-1].error
        for h in (ok, ok2):
            last = list(h.events())[-1]
            assert last.error is None and last.stats.completion_tokens == 5
    finally:
        eng.close()
    with pytest.raises(ContextOverflow):
        tiny_llm.generate([5] * 513, max_tokens=2)  # n_ctx is 512


def test_breaking_off_a_stream_cancels_it(tiny_llm):
    pieces = tiny_llm.stream([3, 4, 5], max_tokens=200, temperature=0.8, seed=1)
    next(pieces)
    pieces.close()  # the engine frees the request's blocks
    eng = tiny_llm.engine
    assert eng.call(lambda: eng.scheduler.has_unfinished()) is False
    assert eng.call(lambda: eng.block_manager.num_free_blocks) == eng.block_manager.num_blocks


def test_real_model_batch_of_16_mixed_prompts_equals_alone(smollm2_path):
    """SmolLM2: 16 prompts of 5-200 tokens, several sharing a system prefix, sampled with seeds."""
    llm = LLM(str(smollm2_path), n_ctx=512, max_num_seqs=16)
    try:
        system = llm.tokenize("You are a helpful assistant. Answer briefly and clearly. " * 4)
        rng = np.random.default_rng(7)
        prompts = []
        for i in range(16):
            body = rng.integers(100, 40000, int(rng.integers(5, 120))).tolist()
            prompts.append((system if i % 3 == 0 else []) + body)
        params = lambda i: SamplingParams(max_tokens=10, temperature=0.8, seed=i)  # noqa: E731
        alone = [_engine_run(llm, [p], lambda _i, i=i: params(i), max_num_seqs=1)[0][0]
                 for i, p in enumerate(prompts)]
        together, _ = _engine_run(llm, prompts, params, max_num_seqs=16, max_num_batched_tokens=256)
        assert together == alone
    finally:
        llm.close()


def test_a_dead_engine_thread_fails_callers_instead_of_hanging(tiny_llm, monkeypatch):
    from localllm.engine.engine import RequestFailed

    def boom(*a, **k):
        raise RuntimeError("kernel load failed")

    monkeypatch.setattr(tiny_llm.model, "forward", boom)  # the engine's warm-up runs it first
    eng = Engine(tiny_llm.model, tiny_llm.tokenizer, 64, tiny_llm.threads, max_num_seqs=1)
    with pytest.raises(RequestFailed, match="kernel load failed"):
        eng.call(lambda: 1)
    with pytest.raises(RequestFailed, match="kernel load failed"):
        eng.submit([3, 4], SamplingParams(max_tokens=2))


def test_top_logprobs_are_the_stable_order_of_the_whole_row():
    """The top-N alternatives: most likely first, ties by token id, on a 262k-entry row too."""
    from localllm.engine.engine import Engine, log_softmax

    rng = np.random.default_rng(3)
    for vocab in (50, 262144):
        for ties in (False, True):
            x = rng.standard_normal(vocab).astype(np.float32)
            if ties:
                x = np.round(x, 1)  # many equal logits, at the top too
            ref = np.argsort(-log_softmax(x), kind="stable")
            for n in (1, 5, 20):
                assert [t for t, _ in Engine._logprob(x, 0, n).top] == ref[:n].tolist()
