"""The shared transformer on tiny random models of each family, against tests/numpy_reference.py.

Tolerances are relative to the logit scale (max |reference logit|, ~60 for these models)
and were set from measured differences with a margin of 2-6x (see each constant).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from localllm import LLM
from localllm.errors import ContextOverflow, UsageError
import localllm.generation as generation
from localllm.generation import PREFILL_CHUNK, Session
from localllm.gguf import open_gguf
from localllm.models import load_model
from localllm.quant.gemm_tiles import M_CHUNK
from numpy_reference import ReferenceModel, attention, causal_mask, rope
from tiny_models import write_tiny_model

ARCHS = {
    "llama": dict(n_layer=2, n_head=4, n_head_kv=2),  # GQA 4/2
    # MQA, 6 layers so layers 0-4 slide and layer 5 is global; 40 tokens > window 8
    "gemma3": dict(n_layer=6, n_head=4, n_head_kv=1, head_dim=32, sliding_window=8),
    "qwen2": dict(n_layer=2, n_head=4, n_head_kv=2),
}
CASES = [(a, q) for q in (Q.F32, Q.Q8_0) for a in ARCHS] + [("llama", Q.Q4_0)]
CASE_IDS = [f"{a}-{q.name}" for a, q in CASES]
N_VOCAB = 300
T = 40
TOKENS = np.random.default_rng(1234).integers(0, N_VOCAB, T)  # (T,)
# More rows than one matmul work item takes (M_CHUNK), so a prompt spans two row chunks.
T_LONG = M_CHUNK + 8
TOKENS_LONG = np.random.default_rng(99).integers(0, N_VOCAB, T_LONG)

# float32 vs float64 only (f32 cache; F32 weights, or any weights on the sgemm path).
# Measured <= 4.9e-7 * scale.
TIGHT = 3e-6
# Quantized weights: activations are rounded to int8 blocks (at every number of rows).
# Measured 3.5e-3 .. 9.1e-3 * scale over 3 seeds x 3 archs x Q8_0/Q4_0/Q5_0.
LOOSE = 2e-2
# f16 KV cache vs f32 KV cache. Measured <= 1.4e-4 * scale.
F16 = 5e-4
# gemma3 against the float64 reference: GELU reads its input at f16 precision (as llama.cpp's
# table does), so a float32-vs-float64 difference of one ulp can move an input by one f16 step.
# Measured 2.2e-5 * scale (F32 weights).
GELU_F16 = 1e-4




def exact_tol(arch: str) -> float:
    """The float-only tolerance for arch: TIGHT, or GELU_F16 where an f16 table is in the path."""
    return GELU_F16 if arch == "gemma3" else TIGHT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """get(arch, qtype) -> (path, localllm Transformer, ReferenceModel), built once per module."""
    made = {}
    root = tmp_path_factory.mktemp("tiny_models")

    def get(arch, qtype=Q.Q8_0):
        if (arch, qtype) not in made:
            path = write_tiny_model(root / f"{arch}-{qtype.name}.gguf", arch, qtype, n_vocab=N_VOCAB,
                                    seed=7, **ARCHS[arch])
            made[arch, qtype] = path, load_model(open_gguf(path)), ReferenceModel(path)
        return made[arch, qtype]

    return get


def all_logits(model, tokens, kv="f32", n_split=1):
    """Logits (len(tokens), vocab) from a fresh cache in one forward call."""
    cache = model.new_cache(len(tokens) + 8, kv)
    return model.forward(tokens, cache, logits_rows=list(range(len(tokens))), n_split=n_split)


def rel_max_diff(a, b, ref):
    return float(np.abs(a - b).max() / np.abs(ref).max())


# ---- the reference itself, checked by hand ----------------------------------------------------


def test_reference_rope_by_hand():
    # d=4, base=100, pos=1: theta_0 = 1, theta_1 = 100^(-1/2) = 0.1
    x = np.array([[[1.0, 0.0, 0.0, 1.0]]])  # (T=1, H=1, d=4)
    pos = np.array([1.0])
    c1, s1, c01, s01 = math.cos(1), math.sin(1), math.cos(0.1), math.sin(0.1)
    # normal pairs (0,1) and (2,3)
    np.testing.assert_allclose(rope(x, pos, 100.0, neox=False)[0, 0], [c1, s1, -s01, c01], atol=1e-15)
    # neox pairs (0,2) and (1,3)
    np.testing.assert_allclose(rope(x, pos, 100.0, neox=True)[0, 0], [c1, -s01, s1, c01], atol=1e-15)
    # position 0 is the identity; rotated dot products depend only on the position difference
    np.testing.assert_array_equal(rope(x, np.array([0.0]), 100.0, False), x)
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 1, 1, 8))  # (1, 1, 8) each
    for neox in (False, True):
        dots = [(rope(q, np.array([p + 5.0]), 50.0, neox) * rope(k, np.array([p + 2.0]), 50.0, neox)).sum()
                for p in (0, 7, 30)]
        np.testing.assert_allclose(dots, dots[0], rtol=1e-12)


def test_reference_masks_and_attention_by_hand():
    np.testing.assert_array_equal(causal_mask(4, window=2), [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(causal_mask(3), np.tril(np.ones((3, 3), bool)))
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((5, 4, 8)), rng.standard_normal((5, 2, 8)), rng.standard_normal((5, 2, 8))
    out = attention(q, k, v, causal_mask(5))  # (5, 4, 8)
    # the first query sees only the first key: its output is that key's value, per KV group
    np.testing.assert_allclose(out[0], v[0, [0, 0, 1, 1]], atol=1e-15)
    # a window of 1 means every query sees only itself
    np.testing.assert_allclose(attention(q, k, v, causal_mask(5, 1)), v[:, [0, 0, 1, 1]], atol=1e-15)
    # one row of the last query, written out: softmax over all 5 keys of KV head 1 (query head 3)
    s = np.array([q[4, 3] @ k[j, 1] for j in range(5)])
    np.testing.assert_allclose(out[4, 3], (np.exp(s) / np.exp(s).sum()) @ v[:, 1], rtol=1e-12)


def test_reference_first_token_by_hand(tmp_path):
    """A 1-layer llama on one token, written out: attention of the first token is just V."""
    path = write_tiny_model(tmp_path / "one.gguf", "llama", Q.Q8_0, n_layer=1, n_vocab=N_VOCAB, seed=3)
    ref = ReferenceModel(path)
    w, t = ref.w, 42

    def norm(x, name):
        return x / np.sqrt((x * x).mean() + 1e-5) * w[name]

    x = w["token_embd.weight"][t]  # (D,)
    v = w["blk.0.attn_v.weight"] @ norm(x, "blk.0.attn_norm.weight")  # (G*d,) = 2 KV heads of 16
    heads = np.concatenate([v[:16], v[:16], v[16:], v[16:]])  # query heads 0,1 -> KV 0; 2,3 -> KV 1
    x = x + w["blk.0.attn_output.weight"] @ heads
    h = norm(x, "blk.0.ffn_norm.weight")
    g, u = w["blk.0.ffn_gate.weight"] @ h, w["blk.0.ffn_up.weight"] @ h  # (F,)
    x = x + w["blk.0.ffn_down.weight"] @ (g / (1 + np.exp(-g)) * u)
    expected = w["token_embd.weight"] @ norm(x, "output_norm.weight")  # tied head, (vocab,)
    np.testing.assert_allclose(ref.forward([t])[0], expected, rtol=1e-10, atol=1e-10)


# ---- localllm against the reference -------------------------------------------------------------


@pytest.mark.parametrize("arch,qtype", CASES, ids=CASE_IDS)
def test_logits_match_reference(tiny, arch, qtype):
    _, model, ref = tiny(arch, qtype)
    want = ref.forward(TOKENS)  # (T, vocab) float64
    got = all_logits(model, TOKENS)
    scale = np.abs(want).max()
    d = rel_max_diff(got, want, want)
    print(f"\n{arch} {qtype.name} T={T}: max |diff| / scale = {d:.2e} (scale {scale:.1f})")
    tol = exact_tol(arch) if qtype == Q.F32 else LOOSE
    assert d <= tol
    # argmax must agree wherever the reference's top two are further apart than the tolerance allows
    top2 = np.sort(want, axis=1)[:, -2:]  # (T, 2)
    clear = top2[:, 1] - top2[:, 0] > 2 * tol * scale
    assert clear.sum() >= T // 2
    np.testing.assert_array_equal(got.argmax(1)[clear], want.argmax(1)[clear])


@pytest.mark.parametrize("arch,qtype", CASES, ids=CASE_IDS)
def test_long_prompt_matches_reference(tiny, arch, qtype):
    """A prompt longer than one matmul row chunk: same tolerance as a short one."""
    _, model, ref = tiny(arch, qtype)
    want = ref.forward(TOKENS_LONG)
    d = rel_max_diff(all_logits(model, TOKENS_LONG), want, want)
    print(f"\n{arch} {qtype.name} T={T_LONG}: max |diff| / scale = {d:.2e}")
    assert d <= (exact_tol(arch) if qtype == Q.F32 else LOOSE)


def test_sliding_window_is_exercised(tiny):
    """Without the window the reference disagrees far beyond LOOSE, so the gemma3 test above has teeth."""
    _, _, ref = tiny("gemma3", Q.Q8_0)
    w = ref.window
    windowed = ref.forward(TOKENS)
    ref.window = 10**9  # layers still slide (and keep their RoPE base), but the mask hides nothing
    try:
        full = ref.forward(TOKENS)
    finally:
        ref.window = w
    np.testing.assert_allclose(full[:w], windowed[:w], rtol=1e-12, atol=1e-9)  # no difference inside the window
    assert rel_max_diff(full[w:], windowed[w:], windowed) > 3 * LOOSE


# ---- invariants of the localllm forward ------------------------------------------------------------


@pytest.mark.parametrize("arch,qtype", CASES, ids=CASE_IDS)
def test_incremental_equals_full_bit_for_bit(tiny, arch, qtype):
    """One arithmetic per row: a token's logits are the same bits in one call, in chunks,
    one at a time (the compiled decode step) and past a matmul row chunk (T_LONG)."""
    _, model, _ = tiny(arch, qtype)
    for kv in ("f32", "f16"):
        full = all_logits(model, TOKENS_LONG, kv=kv)  # (T_LONG, vocab)

        cache = model.new_cache(T_LONG, kv)
        parts, s = [], 0
        for n in (7, 13, 20, 32):
            parts.append(model.forward(TOKENS_LONG[s:s + n], cache, logits_rows=list(range(n))))
            s += n
        np.testing.assert_array_equal(np.concatenate(parts), full)

        cache = model.new_cache(T_LONG, kv)
        single = np.concatenate([model.forward(TOKENS_LONG[i:i + 1], cache) for i in range(T_LONG)])
        assert cache.n_tokens == T_LONG and cache.tokens == TOKENS_LONG.tolist()
        np.testing.assert_array_equal(single, full)


def test_session_feed_chunks_keep_rows(tiny, monkeypatch):
    """Session.feed splits long inputs into PREFILL_CHUNK pieces; the asked rows come back in order."""
    monkeypatch.setattr(generation, "PREFILL_CHUNK", 6)  # 40 tokens -> 7 chunks, some with no asked row
    _, model, _ = tiny("gemma3")
    full = all_logits(model, TOKENS, kv="f16")
    session = Session(model, T, "f16")
    rows = [0, 5, 6, 17, 39]
    np.testing.assert_array_equal(session.feed(TOKENS.tolist(), logits_rows=rows), full[rows])
    session.cache.clear()
    np.testing.assert_array_equal(session.feed(TOKENS.tolist()), full[-1:])


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_attention_split_matches_unsplit(tiny, arch):
    _, model, _ = tiny(arch)
    # prefill rows: many positions have fewer keys than splits, so some chunks are empty
    one = all_logits(model, TOKENS, kv="f16")
    for n_split in (2, 5):
        np.testing.assert_array_equal(all_logits(model, TOKENS, kv="f16", n_split=n_split), one)
    # decode: the last token against 39 cached ones, as Session does for long contexts
    cache = model.new_cache(T, "f16")
    model.forward(TOKENS[:-1], cache)
    base = model.forward(TOKENS[-1:], copy.deepcopy(cache), n_split=1)
    for n_split in (2, 3, 8, 64):
        got = model.forward(TOKENS[-1:], copy.deepcopy(cache), n_split=n_split)
        np.testing.assert_array_equal(got, base)  # the split repeats the unsplit arithmetic


# ---- KV cache ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_truncate_then_refeed(tiny, arch):
    _, model, _ = tiny(arch)
    cache = model.new_cache(T, "f16")
    full = model.forward(TOKENS, cache, logits_rows=list(range(T)))
    keep = 25
    cache.truncate(keep)
    assert cache.n_tokens == keep and cache.tokens == TOKENS[:keep].tolist()
    # overwrite the forgotten slots with other tokens first, then roll back again
    model.forward((TOKENS[keep:] + 1) % N_VOCAB, cache)
    cache.truncate(keep)
    again = model.forward(TOKENS[keep:], cache, logits_rows=list(range(T - keep)))
    assert rel_max_diff(again, full[keep:], full) <= TIGHT
    for bad in (-1, T + 1):
        with pytest.raises(ValueError):
            cache.truncate(bad)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_f16_cache_close_to_f32(tiny, arch):
    _, model, _ = tiny(arch, Q.F32)
    f32, f16 = all_logits(model, TOKENS, kv="f32"), all_logits(model, TOKENS, kv="f16")
    d = rel_max_diff(f16, f32, f32)
    print(f"\n{arch}: f16 vs f32 cache {d:.2e}")
    assert 0 < d <= F16  # > 0: the f16 cache really rounds


# ---- context overflow and bad input ------------------------------------------------------------------


def test_forward_overflow_leaves_cache_unchanged(tiny):
    _, model, _ = tiny("llama")
    cache = model.new_cache(16, "f16")
    model.forward(TOKENS[:10], cache)
    k, v = cache.pool.k.copy(), cache.pool.v.copy()
    with pytest.raises(ContextOverflow):
        model.forward(TOKENS[10:17], cache)
    assert cache.n_tokens == 10 and cache.tokens == TOKENS[:10].tolist()
    np.testing.assert_array_equal(cache.pool.k, k)
    np.testing.assert_array_equal(cache.pool.v, v)
    # what fits still works, and gives the same logits as an uninterrupted run
    got = model.forward(TOKENS[10:16], cache)
    want = all_logits(model, TOKENS[:16], kv="f16")[-1:]
    assert rel_max_diff(got, want, want) <= TIGHT
    with pytest.raises(ContextOverflow):
        model.forward(TOKENS[:1], cache)
    assert cache.n_tokens == 16


def test_session_feed_overflow_leaves_cache_unchanged(tiny):
    """An input longer than one prefill chunk that overflows must not leave earlier chunks behind."""
    _, model, _ = tiny("llama")
    session = Session(model, PREFILL_CHUNK + 40, "f16")
    ids = np.random.default_rng(5).integers(0, N_VOCAB, PREFILL_CHUNK + 60).tolist()
    session.feed(ids[:10])
    with pytest.raises(ContextOverflow):
        session.feed(ids[10:])  # 10 + 512 fits, the 38 after it do not
    assert session.cache.n_tokens == 10, "the first chunk was committed before the overflow was noticed"


def test_out_of_range_token_ids(tiny):
    _, model, _ = tiny("llama")
    cache = model.new_cache(8, "f16")
    for bad in ([N_VOCAB], [3, -1], [0, 10**12]):
        with pytest.raises(ValueError, match=r"out of range \[0, 300\)"):
            model.forward(bad, cache)
    with pytest.raises(ValueError):
        model.forward([], cache)
    assert cache.n_tokens == 0


def test_llm_generate_until_context_full(tiny):
    path, _, _ = tiny("llama")
    llm = LLM(str(path), n_ctx=24)
    no_eos = {i: -math.inf for i in sorted(llm.tokenizer.stop_ids)}  # random weights may pick EOS
    for n_prompt in (21, 24):
        out = llm.generate(TOKENS[:n_prompt].tolist(), max_tokens=50, temperature=0, logit_bias=no_eos)
        assert out.finish_reason == "length"
        # the last generated token is never fed, so it needs no slot of its own
        assert len(out.token_ids) == 24 - n_prompt + 1
    with pytest.raises(ContextOverflow):
        llm.generate(TOKENS[:25].tolist(), max_tokens=5)
    bm = llm.engine.block_manager  # finished and refused requests hold no KV blocks
    assert llm.engine.call(lambda: bm.num_free_blocks) == bm.num_blocks
    with pytest.raises(UsageError, match=r"\[0, 300\)"):
        llm.generate([5, N_VOCAB], max_tokens=2)
