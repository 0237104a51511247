"""Speculative decoding by prompt lookup: the same tokens and logprobs as plain decoding.

The guesses go through the engine's batched forward pass (k + 1 rows of one
request in one step) and are verified by the request's own sampler, so greedy
and seeded sampling must both give exactly plain decoding's output, compared
with ==, and the KV left behind after rejected guesses must be plain decoding's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from localllm import LLM
from localllm.chat import chat_template_from_metadata
from localllm.engine.engine import Engine
from localllm.errors import LocalLLMError, UsageError
from localllm.sampling import SamplingParams
from localllm.speculative import PROBE_EVERY, Acceptance, Governor, PromptLookup, SpeculativeConfig

TEXT = (Path(__file__).parent / "reference" / "texts" / "gpl-2.txt").read_text()[2000:3200]


# ---- the draft source and the governor -------------------------------------------------


def test_prompt_lookup_continues_the_latest_earlier_match():
    pl = PromptLookup(n_max=3, n_min=2)
    ids = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 2, 3]
    assert pl.propose(ids, 2) == [7, 8]  # (2, 3) last ended at position 7: what followed it
    ids += [7]
    assert pl.propose(ids, 5) == [8, 2, 3, 7]  # (2, 3, 7) matches longer; stops at the end of ids
    assert pl.propose(ids + [42], 4) == []  # (7, 42) never seen, and one token is too weak a hint
    assert pl.propose(ids, 0) == []


def test_governor_guesses_only_when_it_pays():
    a = Acceptance()
    a.accepted, a.rejected = 9.0, 1.0  # 90% of guesses right
    flat = Governor(8)
    for rows in (1, 2, 5, 9):
        flat.record_step(rows, 0.010)  # memory-bound: rows are free
    assert flat.choose(a, base_rows=1, decoding=1, available=8) == 8
    assert flat.choose(a, base_rows=1, decoding=1, available=3) == 3

    steep = Governor(8)
    for rows in (1, 2, 5, 9):
        steep.record_step(rows, 0.010 * rows)  # compute-bound: every row costs a full step
    b = Acceptance()
    b.accepted, b.rejected = 9.0, 1.0
    assert steep.choose(b, base_rows=1, decoding=1, available=8) == 1  # a new request probes once at once
    for _ in range(PROBE_EVERY - 1):
        assert steep.choose(b, 1, 1, 8) == 0
    assert steep.choose(b, 1, 1, 8) == 1  # off for PROBE_EVERY steps: one guess to re-measure

    assert Governor(8).choose(Acceptance(), 1, 1, 8) == 0  # no step measured yet: nothing to weigh
    assert Governor(4, adaptive=False).choose(a, 1, 1, 8) == 4


def test_governor_interpolates_step_cost():
    g = Governor(8)
    g.record_step(1, 0.010)
    assert g.cost(4) == 0.010  # one point: flat (optimistic, so the size gets tried)
    g.record_step(5, 0.018)
    assert g.cost(3) == pytest.approx(0.014)
    assert g.cost(9) == pytest.approx(0.026)  # past the range: the last slope


def test_bad_speculative_settings_are_refused(smollm2_path):
    with pytest.raises(LocalLLMError, match="other.gguf"):  # a draft model is found like any model
        LLM(str(smollm2_path), draft_model="other.gguf")
    with pytest.raises(UsageError, match="lookup"):
        LLM(str(smollm2_path), speculative="medusa")
    with pytest.raises(UsageError, match="draft_max"):
        LLM(str(smollm2_path), speculative="lookup", draft_max=0)


# ---- real models -----------------------------------------------------------------------


def _prompt(llm: LLM) -> list[int]:
    """A prompt whose continuation repeats text it has seen, so guesses are often right."""
    if chat_template_from_metadata(llm.gguf.metadata) is None:  # a base model (Gemma 3): the text, then its start
        return llm.prompt_ids(TEXT + "\n\n" + TEXT[:200])
    return llm.chat_ids([{"role": "user", "content": "Repeat this text word for word:\n\n" + TEXT}])


def _run(engine: Engine, ids, params, speculate=True):
    events = list(engine.submit(ids, params, logprobs=3, speculate=speculate).events())
    tokens = [ev.step.token_id for ev in events if ev.step.token_id is not None]
    lps = [(ev.logprob.token_id, ev.logprob.logprob, ev.logprob.top) for ev in events if ev.logprob]
    return tokens, lps, events[-1].stats


def _cached_kv(engine: Engine, ids: list[int]):
    """The pool's K and V of the prefix cache's blocks for ids, read on the engine thread."""
    def read():
        bm = engine.block_manager
        n = bm.allocate_prefix("probe", ids)
        try:
            table = bm.block_table("probe")
            return n, engine.pool.k[:, table].copy(), engine.pool.v[:, table].copy()
        finally:
            bm.free("probe")
    return engine.call(read)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def llm(request, smollm2_path, gemma3_path):
    m = LLM(str(smollm2_path if request.param == "smollm2" else gemma3_path), n_ctx=1024, threads=2)
    yield m
    m.close()


def test_lookup_gives_plain_decodings_tokens_logprobs_and_kv(llm):
    ids = _prompt(llm)
    spec = Engine(llm.model, llm.tokenizer, llm.n_ctx, llm.threads, max_num_seqs=4,
                  speculative=SpeculativeConfig("lookup", draft_max=6, adaptive=False))
    try:
        drafted = accepted = 0
        for params in (SamplingParams(temperature=0, max_tokens=96),
                       SamplingParams(temperature=0.8, top_k=40, seed=7, max_tokens=96)):
            plain = _run(llm.engine, ids, params)
            guessed = _run(spec, ids, params)
            assert guessed[0] == plain[0]  # token for token
            assert guessed[1] == plain[1]  # and the logprobs, bit for bit
            drafted += guessed[2].draft_tokens
            accepted += guessed[2].accepted_tokens
            assert plain[2].draft_tokens == 0
            # KV rollback: the blocks the speculative run left in the prefix cache hold exactly
            # the keys and values plain decoding wrote for the same tokens
            full = ids + plain[0]
            n_plain, k_plain, v_plain = _cached_kv(llm.engine, full)
            n_spec, k_spec, v_spec = _cached_kv(spec, full)
            assert n_spec == n_plain >= len(ids) // 32 * 32 + 32
            assert np.array_equal(k_spec, k_plain) and np.array_equal(v_spec, v_plain)
        assert 0 < accepted < drafted  # guesses were both kept and rolled back
    finally:
        spec.close()


def test_speculating_and_plain_requests_share_steps(llm):
    """A request that guesses and two that do not, in the same steps: each gives its alone output."""
    ids = _prompt(llm)
    other = llm.prompt_ids("The capital of France is")
    params = SamplingParams(temperature=0, max_tokens=48)
    alone = [_run(llm.engine, ids, params)[0], _run(llm.engine, other, params)[0]]
    spec = Engine(llm.model, llm.tokenizer, llm.n_ctx, llm.threads, max_num_seqs=4,
                  speculative=SpeculativeConfig("lookup", draft_max=4, adaptive=False))
    try:
        handles = [spec.submit(ids, params), spec.submit(other, params, speculate=False),
                   spec.submit(ids, params, speculate=False)]
        outs = [[ev.step.token_id for ev in h.events() if ev.step.token_id is not None] for h in handles]
    finally:
        spec.close()
    assert outs == [alone[0], alone[1], alone[0]]


def test_llm_lookup_reports_guesses(smollm2_path):
    llm = LLM(str(smollm2_path), n_ctx=1024, threads=2, speculative="lookup", draft_max=4)
    try:
        out = llm.generate(_prompt(llm), max_tokens=32, temperature=0)
    finally:
        llm.close()
    s = out.stats
    assert s.completion_tokens == len(out.token_ids)  # an end token is neither an output nor counted
    assert s.draft_steps > 0  # the governor's first probe, at least
    assert s.draft_tokens >= s.accepted_tokens >= 0 and 1 <= s.mean_draft_len <= 4


def test_a_stop_string_inside_accepted_guesses_ends_the_output(llm):
    """Stop strings that complete inside a step's accepted guesses: the guesses after them are
    no output, so tokens, text and counts are plain decoding's."""
    ids = _prompt(llm)
    full = _run(llm.engine, ids, SamplingParams(temperature=0, max_tokens=64))[0]
    text = llm.tokenizer.decode(full)
    spec = Engine(llm.model, llm.tokenizer, llm.n_ctx, llm.threads, max_num_seqs=4,
                  speculative=SpeculativeConfig("lookup", draft_max=6, adaptive=False))
    try:
        accepted = 0
        for at in (len(text) // 4, len(text) // 2, 3 * len(text) // 4):
            params = SamplingParams(temperature=0, max_tokens=64, stop=[text[at:at + 5]])
            plain, guessed = _run(llm.engine, ids, params), _run(spec, ids, params)
            assert guessed[0] == plain[0] and len(plain[0]) < len(full)
            assert guessed[2].completion_tokens == plain[2].completion_tokens
            accepted += guessed[2].accepted_tokens
        assert accepted > 0
    finally:
        spec.close()
