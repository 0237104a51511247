"""`localllm run`, `perplexity`, `quantize` from a shell, and the Python API they stand on.

No model output is hard-coded: the CLI is compared with the API, runs with
each other, and everything else is checked for structure.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localllm import LLM, SamplingParams
from localllm.generation import Completion

from tiny_models import byte_level_alphabet, write_tiny_model

REFERENCE = Path(__file__).parent / "reference"
PROMPT = "The three primary colours are"
STATS_FIELDS = ("prompt_tokens", "completion_tokens", "time_to_first_token_s", "prefill_tokens_per_s",
                "decode_tokens_per_s")


def cli(*args, input=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "localllm", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def one_error_line(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(smollm2_path, n_ctx=512)


# ---- localllm run -------------------------------------------------------------------------


def test_run_greedy_matches_api_and_stats_go_to_stderr(llm):
    r = cli("run", "smollm2-135m", PROMPT, "-n", "8", "--temp", "0", "--raw", "--stats")
    assert r.returncode == 0, r.stderr
    expected = llm.generate(PROMPT, max_tokens=8, temperature=0)
    assert expected.text.strip()
    assert r.stdout == expected.text + "\n"  # the continuation only, streamed to stdout
    stats = [line for line in r.stderr.splitlines() if "TTFT" in line]
    assert len(stats) == 1, r.stderr
    assert re.search(r"TTFT [0-9.]+ ms", stats[0]) and re.search(r"prefill [0-9.]+ tok/s", stats[0])
    assert re.search(r"decode [0-9.]+ tok/s", stats[0]) and "(8 tok)" in stats[0]
    n_prompt = len(llm.tokenize(PROMPT, add_bos=llm.tokenizer.add_bos))
    assert f"prompt {n_prompt} tok" in stats[0]


def test_run_reads_prompt_from_stdin(llm):
    prompt = "Once upon a time,\nin a small village,"
    r = cli("run", "smollm2-135m", "-", "-n", "6", "--temp", "0", "--raw", input=prompt)
    assert r.returncode == 0, r.stderr
    assert r.stdout == llm.generate(prompt, max_tokens=6, temperature=0).text + "\n"
    assert "TTFT" not in r.stdout + r.stderr  # no --stats, no stats


def test_run_seed_reproducible(llm):
    args = ("run", "smollm2-135m", "My favourite animal is", "-n", "24", "--temp", "1.0", "--raw")
    a = cli(*args, "--seed", "7")
    b = cli(*args, "--seed", "7")
    c = cli(*args, "--seed", "8")
    for r in (a, b, c):
        assert r.returncode == 0, r.stderr
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout
    # the CLI's defaults are the API's: the same seed samples the same text in-process
    api = llm.generate("My favourite animal is", max_tokens=24, temperature=1.0, seed=7)
    assert a.stdout == api.text + "\n"


@pytest.mark.parametrize("args", [
    ("--temp", "-1"),
    ("-n", "0"),
    ("--top-p", "0"),
    ("--min-p", "2"),
    ("--seed", "x"),
    ("--no-such-option",),
    ("-c", "4"),
])
def test_run_bad_options_are_one_line_usage_errors(args):
    line = one_error_line(cli("run", "smollm2-135m", "Hello", *args), 2)
    assert line.lower().startswith("error")


def test_run_usage_errors_without_prompt_or_with_draft():
    line = one_error_line(cli("run", "smollm2-135m"), 2)
    assert "PROMPT" in line
    line = one_error_line(cli("run", "smollm2-135m", "Hello", "--draft", "smollm2-135m", "--lookup"), 2)
    assert "--draft and --lookup" in line
    line = one_error_line(cli("run", "smollm2-135m", "Hello", "--draft", "no-such-model-xyz"), 2)
    assert "no-such-model-xyz" in line
    line = one_error_line(cli("run", "smollm2-135m", "-", input=""), 2)
    assert "empty" in line


# ---- the Python API ---------------------------------------------------------------------------


def test_generate_greedy_is_stable_and_equals_stream(llm):
    first = llm.generate(PROMPT, max_tokens=16, temperature=0)
    llm.generate("Something else entirely:", max_tokens=4, temperature=0)  # a different cache in between
    again = llm.generate(PROMPT, max_tokens=16, temperature=0)
    warm = llm.generate(PROMPT, max_tokens=16, temperature=0)  # the whole prompt is cached now
    n_prompt = len(llm.tokenize(PROMPT, add_bos=llm.tokenizer.add_bos))
    # the engine's prefix cache serves whole 32-token blocks, leaving at least one token for logits
    assert warm.stats.cached_tokens == (n_prompt - 1) // 32 * 32
    for c in (again, warm):
        assert (c.text, c.token_ids, c.finish_reason) == (first.text, first.token_ids, first.finish_reason)
    pieces = list(llm.stream(PROMPT, max_tokens=16, temperature=0))
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == first.text
    assert llm.detokenize(first.token_ids) == first.text
    # a prompt given as token ids is the same prompt
    ids = llm.tokenize(PROMPT, add_bos=llm.tokenizer.add_bos)
    assert llm.generate(ids, max_tokens=16, temperature=0).token_ids == first.token_ids


def test_completion_structure_and_stats(llm):
    c = llm.generate(PROMPT, max_tokens=12, temperature=0)
    assert isinstance(c, Completion)
    assert isinstance(c.text, str) and c.text
    assert isinstance(c.token_ids, list) and all(isinstance(t, int) for t in c.token_ids)
    assert c.finish_reason in ("stop", "length")
    s = c.stats
    for name in STATS_FIELDS:
        value = getattr(s, name)
        assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, name
    assert s.prompt_tokens == len(llm.tokenize(PROMPT, add_bos=llm.tokenizer.add_bos))
    assert s.completion_tokens == len(c.token_ids) == 12 and c.finish_reason == "length"
    assert s.time_to_first_token_s > 0 and s.prefill_tokens_per_s > 0 and s.decode_tokens_per_s > 0
    assert set(STATS_FIELDS) <= set(s.as_dict())


def test_max_tokens_bound_gives_length(llm):
    full = llm.generate(PROMPT, max_tokens=16, temperature=0)
    for n in (1, 5):
        c = llm.generate(PROMPT, max_tokens=n, temperature=0)
        assert c.finish_reason == "length" and c.token_ids == full.token_ids[:n]
        assert full.text.startswith(c.text)


def test_stop_strings(llm):
    prompt = "Shopping list:\n1. apples\n2. bread\n3."
    full = llm.generate(prompt, max_tokens=48, temperature=0)
    assert "\n" in full.text, full.text  # precondition: the list goes on over several lines
    c = llm.generate(prompt, max_tokens=48, temperature=0, stop=["\n"])
    assert c.finish_reason == "stop"
    assert c.text == full.text[: full.text.index("\n")] and "\n" not in c.text
    # a stop string can start mid-token and span tokens; a plain str works too
    stop = full.text[2:7]
    c = llm.generate(prompt, max_tokens=48, temperature=0, stop=stop)
    assert c.finish_reason == "stop" and c.text == full.text[: full.text.index(stop)]
    assert "".join(llm.stream(prompt, max_tokens=48, temperature=0, stop=stop)) == c.text
    # a stop string that never shows up changes nothing
    c = llm.generate(prompt, max_tokens=48, temperature=0, stop=["\x00never\x00"])
    assert (c.text, c.finish_reason) == (full.text, full.finish_reason)


def test_list_of_prompts_equals_one_at_a_time(llm):
    prompts = [PROMPT, "def fibonacci(n):", "Paris is the capital of"]
    batch = llm.generate(prompts, max_tokens=10, temperature=0)
    assert isinstance(batch, list) and len(batch) == len(prompts)
    for p, b in zip(prompts, batch):
        assert isinstance(b, Completion)
        one = llm.generate(p, max_tokens=10, temperature=0)
        assert (b.text, b.token_ids, b.finish_reason) == (one.text, one.token_ids, one.finish_reason)
    assert len({b.text for b in batch}) == len(prompts)


@pytest.fixture(scope="module")
def spellable(llm) -> set[int]:
    """Bytes that have a token of their own. SmolLM2's vocabulary lacks a few (0xF1, 0xF2, 0xF5-0xFF, ...),
    so characters made of them cannot be encoded at all; like llama.cpp the tokenizer drops such bytes."""
    vocab = set(llm.gguf.metadata["tokenizer.ggml.tokens"])
    return {b for b, ch in enumerate(byte_level_alphabet()) if ch in vocab}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_tokenize_detokenize_round_trip(llm, spellable, text):
    ids = llm.tokenize(text)
    assert all(isinstance(t, int) and 0 <= t < llm.model.cfg.vocab_size for t in ids)
    if not set(text.encode("utf-8")) <= spellable:
        return  # checked for not crashing only
    assert llm.detokenize(ids) == text


def test_tokenize_round_trip_examples(llm):
    for text in ["Hello, world!", "  leading and trailing  ", "tabs\tand\nnewlines\n\n",
                 "naïve café – 日本語 🙂", "<|im_start|>user", "1234567890", ""]:
        assert llm.detokenize(llm.tokenize(text)) == text
    assert llm.tokenize("<|im_start|>", special=True) != llm.tokenize("<|im_start|>")
    assert len(llm.tokenize("<|im_start|>", special=True)) == 1
    # a character the vocabulary cannot spell costs its own bytes, not its neighbours
    text = llm.detokenize(llm.tokenize("a\U00040000b"))
    assert text.startswith("a") and text.endswith("b")


def test_chat_uses_chatml_template(llm):
    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "What colour is the sky?"}]
    prompt = llm.chat_prompt(messages)
    assert prompt.startswith("<|im_start|>system\nYou answer in one word.<|im_end|>\n")
    assert "<|im_start|>user\nWhat colour is the sky?<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = llm.chat_ids(messages)
    assert ids == llm.tokenize(prompt, add_bos=False, special=True)
    c = llm.chat(messages, max_tokens=16, temperature=0)
    assert isinstance(c, Completion) and c.text.strip()
    assert c.stats.prompt_tokens == len(ids)
    assert "<|im_end|>" not in c.text and "<|im_start|>" not in c.text
    assert c.token_ids == llm.generate(ids, max_tokens=16, temperature=0).token_ids
    # without a system message the template still speaks ChatML
    user_only = llm.chat_prompt(messages[1:])
    assert "<|im_start|>user\nWhat colour is the sky?<|im_end|>\n<|im_start|>assistant\n" in user_only


def test_sampling_params_validation(llm):
    with pytest.raises(ValueError):
        llm.generate(PROMPT, max_tokens=0)
    with pytest.raises(ValueError):
        llm.generate(PROMPT, temperature=-1)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)


# ---- perplexity -----------------------------------------------------------------------------


def test_perplexity_cli_last_line():
    r = cli("perplexity", "smollm2-135m", "-f", str(REFERENCE / "texts" / "gpl-2.txt"), "-c", "512")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"PPL = ([0-9.]+)", last)
    assert m, r.stdout
    expected = json.loads((REFERENCE / "perplexity_gpl2.json").read_text())["results"]
    assert float(m.group(1)) == pytest.approx(expected["SmolLM2-135M-Instruct.Q4_1.gguf"], rel=0.01)


# ---- quantize ---------------------------------------------------------------------------------


def test_quantize_tiny_model_to_q8_0(tmp_path):
    src = write_tiny_model(tmp_path / "tiny-f32.gguf", qtype=Q.F32)
    dst = tmp_path / "tiny-q8_0.gguf"
    r = cli("quantize", str(src), str(dst), "--type", "q8_0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(dst) and dst.is_file()

    before = json.loads(cli("info", str(src), "--json").stdout)
    r = cli("info", str(dst), "--json")
    assert r.returncode == 0, r.stderr
    after = json.loads(r.stdout)
    assert "Q8_0" in after["tensor_types"] and "Q8_0" not in before["tensor_types"]
    n_q8 = after["tensor_types"]["Q8_0"]["count"]
    assert n_q8 >= 2 * 4  # every layer's matrices at least
    assert sum(t["count"] for t in after["tensor_types"].values()) == \
        sum(t["count"] for t in before["tensor_types"].values())

    # the quantized model still computes nearly the same function
    ids = list(range(10, 30))
    ref = LLM(src, n_ctx=64).logits(ids)
    q8 = LLM(dst, n_ctx=64).logits(ids)
    assert q8.shape == ref.shape and np.isfinite(q8).all()
    rel = np.linalg.norm(q8 - ref) / np.linalg.norm(ref)
    assert rel < 0.05, rel


def test_quantize_errors(tmp_path):
    src = write_tiny_model(tmp_path / "tiny.gguf", qtype=Q.F32)
    line = one_error_line(cli("quantize", str(src), str(src), "--type", "q8_0"), 2)
    assert "OUT must differ from IN" in line
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    out = tmp_path / "out.gguf"
    one_error_line(cli("quantize", str(bad), str(out), "--type", "q8_0"), 1)
    assert not out.exists()
    one_error_line(cli("quantize", str(src), str(out), "--type", "q9_9"), 2)
    one_error_line(cli("quantize", str(tmp_path / "missing.gguf"), str(out), "--type", "q8_0"), 2)
