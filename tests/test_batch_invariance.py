"""One arithmetic per row: a token's logits are the same bits however many tokens share
its forward pass (llama.cpp's -b, here LLM.logits(ids, n_batch=K))."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from localllm import LLM
from localllm.errors import UsageError
from reference_check import REF
from tiny_models import write_tiny_model

N_BATCHES = (1, 7, 37, 64, 65, 512)


def assert_rows_identical(llm, ids):
    base = llm.logits(ids, n_batch=N_BATCHES[-1])  # (len(ids), vocab)
    for k in N_BATCHES[:-1]:
        got = llm.logits(ids, n_batch=k)
        bad = (got.view(np.uint32) != base.view(np.uint32)).any(axis=1)
        assert not bad.any(), f"n_batch={k}: rows {np.nonzero(bad)[0][:10].tolist()} differ"


@pytest.mark.parametrize("name,n_tokens", [("smollm2", 600), ("gemma3", 300)])
def test_real_models_rows_identical_for_every_n_batch(name, n_tokens, smollm2_path, gemma3_path):
    """600 tokens on SmolLM2 cross a 512-token chunk; Gemma's 262k-wide rows keep it to 300."""
    llm = LLM(str(smollm2_path if name == "smollm2" else gemma3_path), n_ctx=n_tokens)
    ids = llm.tokenize((REF / "texts" / "gpl-2.txt").read_text())[:n_tokens]
    assert len(ids) == n_tokens
    assert_rows_identical(llm, ids)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2"])
def test_tiny_models_rows_identical_for_every_n_batch(tmp_path, arch):
    kw = dict(n_head=4, n_head_kv=1, head_dim=32, sliding_window=8) if arch == "gemma3" else {}
    path = write_tiny_model(tmp_path / f"{arch}.gguf", arch, Q.Q8_0, n_layer=2, n_vocab=300, seed=5, **kw)
    llm = LLM(str(path), n_ctx=600)
    ids = np.random.default_rng(3).integers(0, 300, 530).tolist()
    assert_rows_identical(llm, ids)


def test_n_batch_must_be_a_positive_integer(tmp_path):
    path = write_tiny_model(tmp_path / "t.gguf", "llama", Q.Q8_0, n_layer=1, n_vocab=300, seed=5)
    llm = LLM(str(path), n_ctx=16)
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(UsageError, match="n_batch"):
            llm.logits([1, 2, 3], n_batch=bad)
