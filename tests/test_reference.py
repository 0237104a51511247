"""Both real models against llama.cpp's reference outputs (tests/reference/).

Tolerances are the ones llama.cpp meets against itself (see README, "Correctness").
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from localllm import LLM
from reference_check import NEAR_TIE, Agreement, compare_prompt, greedy_prefix_ok, kl_divergence, load_reference, REF


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request, smollm2_path, gemma3_path):
    path = smollm2_path if request.param == "smollm2" else gemma3_path
    return request.param, LLM(str(path), n_ctx=1024)


def test_logits_agree_with_llama_cpp(model):
    name, llm = model
    ref, npz = load_reference(name)
    agg = Agreement()
    kls = []
    for i, gen in enumerate(ref["generate"]):
        ids = gen["prompt_ids"] + gen["greedy_ids"]
        logits = llm.logits(ids)
        compare_prompt(gen, logits, agg)
        kls.append(kl_divergence(npz[f"last_prompt_logits_{i}"], logits[len(gen["prompt_ids"]) - 1]))
    print(f"\n{name}: argmax {agg.argmax_equal}/{agg.positions} ({agg.argmax_rate:.3f}), clear flips "
          f"{agg.clear_flips}, max top-20 log-prob diff {agg.max_top20_diff:.3f}, "
          f"KL max {max(kls):.4f} mean {np.mean(kls):.4f}")
    assert agg.clear_flips == 0
    assert agg.argmax_rate >= 0.95
    assert max(kls) <= 0.02
    assert np.mean(kls) <= 0.01


def test_greedy_continuations(model):
    name, llm = model
    ref, _ = load_reference(name)
    for gen in ref["generate"]:
        out = llm.generate(gen["prompt_ids"], max_tokens=len(gen["greedy_ids"]), temperature=0)
        ok, must = greedy_prefix_ok(gen, out.token_ids, NEAR_TIE[name])
        assert ok, f"{gen['prompt']!r}: first {must} tokens differ: {out.token_ids[:must]} vs {gen['greedy_ids'][:must]}"


def test_perplexity_within_one_percent(model):
    name, llm = model
    expected = json.loads((REF / "perplexity_gpl2.json").read_text())["results"]
    key = "SmolLM2-135M-Instruct.Q4_1.gguf" if name == "smollm2" else "gemma-3-270m-q4_k_m.gguf"
    text = (REF / "texts" / "gpl-2.txt").read_text()
    ppl = llm.perplexity(text, n_ctx=512)
    print(f"\n{name}: PPL {ppl:.4f} vs llama.cpp {expected[key]:.4f}")
    assert abs(ppl / expected[key] - 1) < 0.01
