"""Speculative decoding with a draft model: exact outputs, the exact rejection rule, KV rollback.

Greedy guesses are the draft's argmax and are kept only where the target's own
argmax agrees, so the tokens and logprobs must equal plain decoding's (==). A
sampled guess goes through the rejection rule, whose output distribution must
be the target's: checked with a chi-square test on known distributions.
"""

from __future__ import annotations

import numpy as np
import pytest

from localllm import LLM
from localllm.engine.engine import Engine
from localllm.errors import UsageError
from localllm.quant.convert import quantize_gguf
from localllm.sampling import SamplingParams, draw
from localllm.speculative import SpeculativeConfig, rejection_step

CHI2_DF5_P001 = 20.515  # the chi-square distribution's 99.9% point with 5 degrees of freedom


def _chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def test_rejection_rule_gives_the_target_distribution():
    ids = np.arange(6)
    q = np.array([0.40, 0.25, 0.15, 0.10, 0.06, 0.04])  # the target's distribution
    p = np.array([0.10, 0.45, 0.05, 0.30, 0.00, 0.10])  # the draft's: it never proposes token 4
    rng = np.random.default_rng(1)
    n = 40_000
    guesses = np.array([draw(ids, p, rng) for _ in range(n)])
    out = np.array([rejection_step(ids, q, ids, p, int(g), rng) for g in guesses])
    counts = np.bincount(out, minlength=6)
    assert _chi2(counts, q) < CHI2_DF5_P001
    # the test has power: the guesses themselves (what keeping every guess would give) fail it
    assert _chi2(np.bincount(guesses, minlength=6)[[0, 1, 2, 3, 5]], q[[0, 1, 2, 3, 5]] / 0.96) > 1000
    # the draft distribution over a subset of the target's ids works too, and p == q keeps every guess
    sub = np.array([1, 3])
    assert rejection_step(ids, q, sub, np.array([0.5, 0.5]), 3, rng) in range(6)
    assert all(rejection_step(ids, q, ids, q, t, rng) == t for t in range(6))


def test_draft_model_settings_are_checked(smollm2_path, gemma3_path):
    with pytest.raises(UsageError, match="vocabulary"):
        LLM(str(smollm2_path), draft_model=str(gemma3_path))
    with pytest.raises(UsageError, match="draft_model"):
        LLM(str(smollm2_path), speculative="draft")
    with pytest.raises(UsageError, match="cannot go with"):
        LLM(str(smollm2_path), draft_model=str(smollm2_path), speculative="lookup")


# ---- real models -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def pair(request, smollm2_path, gemma3_path, tmp_path_factory):
    """A target, and a draft that is its own file requantized to Q4_0 (close, not equal)."""
    path = smollm2_path if request.param == "smollm2" else gemma3_path
    requantized = tmp_path_factory.mktemp("draft") / f"{request.param}-q4_0.gguf"
    quantize_gguf(path, requantized, "q4_0")
    target = LLM(str(path), n_ctx=512, threads=2)
    draft = LLM(str(requantized), n_ctx=16, threads=2)  # only its weights are used
    yield target, draft
    target.close()


def _prompt(llm: LLM) -> list[int]:
    return llm.prompt_ids("The three most important inventions of the last century were")


def _engine(target: LLM, draft_model, draft_max: int = 4) -> Engine:
    return Engine(target.model, target.tokenizer, target.n_ctx, target.threads, max_num_seqs=2,
                  speculative=SpeculativeConfig("draft", draft_max, adaptive=False), draft_model=draft_model)


def _run(engine: Engine, ids, params):
    events = list(engine.submit(ids, params, logprobs=3).events())
    tokens = [ev.step.token_id for ev in events if ev.step.token_id is not None]
    lps = [(ev.logprob.token_id, ev.logprob.logprob, ev.logprob.top) for ev in events if ev.logprob]
    return tokens, lps, events[-1].stats


def _cached_kv(bm, pool, call, ids: list[int]):
    """K and V of the prefix cache's blocks for ids in one block manager's pool (engine thread)."""
    def read():
        n = bm.allocate_prefix("probe", ids)
        try:
            table = bm.block_table("probe")
            return n, pool.k[:, table].copy(), pool.v[:, table].copy()
        finally:
            bm.free("probe")
    return call(read)


def test_greedy_draft_gives_plain_tokens_logprobs_and_kv(pair):
    target, draft = pair
    ids = _prompt(target)
    params = SamplingParams(temperature=0, max_tokens=48)
    plain = _run(target.engine, ids, params)
    for draft_model in (target.model, draft.model):  # the same file, then the requantized one
        spec = _engine(target, draft_model)
        try:
            tokens, lps, stats = _run(spec, ids, params)
            assert tokens == plain[0]  # token for token
            assert lps == plain[1]  # and the logprobs, bit for bit
            assert stats.draft_tokens > 0
            if draft_model is target.model:
                assert stats.accepted_tokens == stats.draft_tokens  # the draft is the target: all kept
            else:
                assert 0 < stats.accepted_tokens < stats.draft_tokens  # kept and rolled back
            # KV rollback: the target's cached blocks hold plain decoding's keys and values
            full = ids + plain[0]
            n_plain, k_plain, v_plain = _cached_kv(target.engine.block_manager, target.engine.pool,
                                                   target.engine.call, full)
            n_spec, k_spec, v_spec = _cached_kv(spec.block_manager, spec.pool, spec.call, full)
            assert n_spec == n_plain > 0
            assert np.array_equal(k_spec, k_plain) and np.array_equal(v_spec, v_plain)
            if draft_model is target.model:  # and the draft's cache, rolled back too, holds the same
                n_d, k_d, v_d = _cached_kv(spec.drafter.block_manager, spec.drafter.pool, spec.call, full)
                assert n_d == n_plain
                assert np.array_equal(k_d, k_plain) and np.array_equal(v_d, v_plain)
        finally:
            spec.close()


def test_sampled_draft_equal_to_target_keeps_every_guess(pair):
    """With the target as its own draft, p == q at every guess, so the rule keeps them all; a
    different draft is rejected sometimes and still gives a full answer."""
    target, draft = pair
    ids = _prompt(target)
    params = SamplingParams(temperature=0.9, top_k=40, seed=5, max_tokens=40)
    for draft_model in (target.model, draft.model):
        spec = _engine(target, draft_model)
        try:
            tokens, _, stats = _run(spec, ids, params)
        finally:
            spec.close()
        assert len(tokens) == stats.completion_tokens + (tokens[-1] in target.tokenizer.stop_ids)
        assert stats.draft_tokens > 0
        if draft_model is target.model:
            assert stats.accepted_tokens == stats.draft_tokens


def test_llm_with_draft_model_batches_with_plain_requests(smollm2_path):
    """LLM(draft_model=...): several prompts share steps, each answer is its greedy plain answer."""
    plain = LLM(str(smollm2_path), n_ctx=512, threads=2)
    prompts = ["The capital of France is", "List three colours:", "def fibonacci(n):"]
    try:
        want = [c.token_ids for c in plain.generate(prompts, max_tokens=24, temperature=0)]
    finally:
        plain.close()
    spec = LLM(str(smollm2_path), n_ctx=512, threads=2, draft_model=str(smollm2_path),
               speculative=SpeculativeConfig("draft", 3, adaptive=False))  # always guess: the governor would not
    try:
        outs = spec.generate(prompts, max_tokens=24, temperature=0)
    finally:
        spec.close()
    assert [c.token_ids for c in outs] == want
    for c in outs:
        assert c.stats.draft_steps > 0 and c.stats.mean_draft_len <= 3
        assert c.stats.accepted_tokens == c.stats.draft_tokens  # the draft is the target


def test_governor_weighs_draft_passes():
    """A draft pass as dear as a target step never pays (each yields at most one token); a cheap
    one does, and passes other requests already run cost only their extra row."""
    from localllm.speculative import DRAFT_PRIOR, Acceptance, Governor

    sure = Acceptance(DRAFT_PRIOR)
    sure.accepted, sure.rejected = 19.0, 1.0  # 95% of guesses kept
    g = Governor(8)
    for rows in (1, 2, 5, 9):
        g.record_step(rows, 0.010 + 0.001 * rows)  # the target: nearly memory-bound
    g.record_draft_step(1, 0.010)
    g.record_draft_step(2, 0.011)
    dear = g.choose(sure, 1, 1, 8, lambda k: g.draft_seconds(k, 2, 0, []))
    assert dear == 0
    for _ in range(60):  # a draft ten times cheaper (the costs are smoothed: repeat until they settle)
        g.record_draft_step(1, 0.001)
        g.record_draft_step(2, 0.0012)
    assert g.choose(sure, 1, 1, 8, lambda k: g.draft_seconds(k, 2, 0, [])) >= 4
    # passes already running for another request: only the extra row is paid
    assert g.draft_seconds(3, 1, 1, [1, 1]) == pytest.approx(3 * (0.0012 - 0.001), rel=1e-3)
