"""`localllm run` answers through the model's chat template; `--raw` is plain completion.

Nothing is hard-coded: each CLI run is compared with the API call it stands
for (`LLM.chat` for a templated answer, `LLM.generate` for raw completion).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from localllm import LLM
from localllm.chat import chat_template_from_metadata
from localllm.cli import run_input

from tiny_models import write_tiny_model

QUESTION = "What is 2+2? Answer with one number."
POEM = "Write a short poem about the sea."


def cli(*args, input=None):
    return subprocess.run([sys.executable, "-m", "localllm", *args], input=input, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))


@pytest.fixture(scope="module")
def smollm(smollm2_path):
    return LLM(smollm2_path, n_ctx=512)


def user(text):
    return [{"role": "user", "content": text}]


def test_run_answers_a_chat_model_through_its_template(smollm):
    assert chat_template_from_metadata(smollm.gguf.metadata) is not None  # precondition: SmolLM2 has one
    r = cli("run", "smollm2-135m", POEM, "-n", "24", "--temp", "0", "--stats")
    assert r.returncode == 0, r.stderr
    answer = smollm.chat(user(POEM), max_tokens=24, temperature=0)
    assert answer.text.strip()
    assert r.stdout == answer.text + "\n"
    # the prompt that went in was the rendered single user turn
    assert f"prompt {len(smollm.chat_ids(user(POEM)))} tok" in r.stderr
    # raw completion of the same words is something else: what `run` printed before
    raw = cli("run", "smollm2-135m", POEM, "-n", "24", "--temp", "0", "--raw")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == smollm.generate(POEM, max_tokens=24, temperature=0).text + "\n"
    assert raw.stdout != r.stdout


def test_run_stops_at_the_end_of_turn(smollm):
    answer = smollm.chat(user(QUESTION), max_tokens=48, temperature=0)
    assert answer.finish_reason == "stop" and answer.text.strip()  # precondition: a short answer
    r = cli("run", "smollm2-135m", QUESTION, "-n", "48", "--temp", "0", "--stats")
    assert r.returncode == 0, r.stderr
    assert r.stdout == answer.text + "\n"
    assert "<|im_end|>" not in r.stdout and "<|im_start|>" not in r.stdout
    n = int(re.search(r"\((\d+) tok\)", r.stderr).group(1))
    assert n == len(answer.token_ids) < 48


def test_run_reads_a_templated_prompt_from_stdin(smollm):
    r = cli("run", "smollm2-135m", "-", "-n", "12", "--temp", "0", input=QUESTION)
    assert r.returncode == 0, r.stderr
    assert r.stdout == smollm.chat(user(QUESTION), max_tokens=12, temperature=0).text + "\n"


def test_run_on_a_model_without_template_stays_plain(gemma3_path):
    gemma = LLM(gemma3_path, n_ctx=256)
    assert chat_template_from_metadata(gemma.gguf.metadata) is None  # Gemma 3 270m here is the base model
    prompt = "The capital of France is"
    r = cli("run", str(gemma3_path), prompt, "-n", "6", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == gemma.generate(prompt, max_tokens=6, temperature=0).text + "\n"
    assert "ChatML" not in r.stderr  # no fallback template was guessed, so no warning about one


def test_run_input_choice(tmp_path, smollm):
    tiny = LLM(write_tiny_model(tmp_path / "tiny.gguf"), n_ctx=64)
    assert run_input(tiny, "hello", raw=False) == ("hello", ())  # no template: plain text
    assert run_input(smollm, "hello", raw=True) == ("hello", ())
    ids, stops = run_input(smollm, "hello", raw=False)
    assert ids == smollm.chat_ids(user("hello")) and stops == smollm.chat_stops
