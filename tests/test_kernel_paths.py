"""Every kernel path this CPU can run (LOCALLLM_KERNELS), checked in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.errors import LocalLLMError
from localllm.isa import PATHS, available_paths, choose_path

CHECK = Path(__file__).parent / "kernel_path_check.py"
AVAILABLE = available_paths()


def _run_check(path: str) -> dict:
    env = dict(os.environ, LOCALLLM_KERNELS=path)
    env.pop("LOCALLLM_PORTABLE", None)
    res = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=1200)
    assert res.stdout.strip(), res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    return {p: _run_check(p) for p in AVAILABLE}


@pytest.mark.parametrize("path", AVAILABLE)
def test_path_matches_dequantization_and_rows_are_invariant(results, path):
    res = results[path]
    assert res["path"] == path
    assert res["failures"] == []


def test_attention_is_the_same_on_every_path(results):
    """The 16-lane attention loops (avx512) keep the 8-lane code's chains: same bits."""
    digests = {p: results[p]["digest"]["attention"] for p in AVAILABLE}
    assert len(set(digests.values())) == 1, digests


def test_x86_paths_agree_bit_for_bit(results):
    """avx512 repeats avx2's integer lanes and float steps, so their outputs are equal."""
    x86 = [p for p in AVAILABLE if p != "portable"]
    for p in x86[1:]:
        assert results[p]["digest"] == results[x86[0]]["digest"], p


def test_choice_and_refusals():
    feats_avx2 = {"avx2": True, "fma": True, "f16c": True}
    feats_512 = dict(feats_avx2, avx512f=True, avx512bw=True, avx512vl=True, avx512vnni=True)
    assert choose_path({}, feats_512) == "avx512"
    assert choose_path({}, feats_avx2) == "avx2"
    assert choose_path({}, {}) == "portable"
    assert choose_path({"LOCALLLM_KERNELS": "avx2"}, feats_512) == "avx2"
    assert choose_path({"LOCALLLM_PORTABLE": "1"}, feats_512) == "portable"
    with pytest.raises(LocalLLMError, match="lacks"):
        choose_path({"LOCALLLM_KERNELS": "avx512"}, feats_avx2)
    with pytest.raises(LocalLLMError, match="not a kernel path"):
        choose_path({"LOCALLLM_KERNELS": "sse9"}, feats_512)
    assert set(AVAILABLE) <= set(PATHS)


def test_unknown_path_fails_with_one_line(tmp_path):
    env = dict(os.environ, LOCALLLM_KERNELS="sse9", LOCALLLM_HOME=str(tmp_path))
    from gguf import GGMLQuantizationType as Q
    from tiny_models import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf", "llama", Q.Q8_0, n_layer=1, n_vocab=300, seed=3)
    res = subprocess.run([sys.executable, "-m", "localllm", "run", str(model), "hi"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOCALLLM_KERNELS='sse9' is not a kernel path" in lines[0], res.stderr
