"""scripts/make_synthetic_model.py: valid random blocks of every type, and the q4_k_m type mix."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from localllm.gguf import open_gguf
from localllm.models import load_model

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_model.py"
_spec = importlib.util.spec_from_file_location("make_synthetic_model", _SCRIPT)
smm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smm)

# 8 layers: n/8 = 1 and 7n/8 = 7, so use_more_bits picks 0, 7 and (il - 1) % 3 == 2: 3, 6.
# K-quant rows need multiples of 256 columns.
SMALL = (8, 256, 4, 2, 512, 300, 64)  # layers, dim, heads, kv heads, ff, vocab, context


@pytest.mark.parametrize("type_name", sorted(smm.TYPES))
def test_random_blocks_have_the_asked_size_and_about_zero_mean(type_name):
    qtype = smm.TYPES[type_name]
    rms = 0.75 / np.sqrt(2048)
    raw = smm.random_blocks(np.random.default_rng(0), qtype, 64, 2048, rms)
    w = gguf.quants.dequantize(raw, qtype)  # (64, 2048)
    assert np.isfinite(w).all()
    assert 0.8 * rms < np.sqrt(np.mean(w ** 2)) < 1.25 * rms
    # q4_0 and q5_0 codes are centred half a step below zero, -0.5 d, about 0.1 rms
    assert abs(w.mean()) < 0.15 * rms


def test_use_more_bits_is_llama_cpps_rule():
    # TinyLlama (22 layers): n/8 = 2, 7n/8 = 19, (il - 2) % 3 == 2 at 4, 7, ... 16
    assert [il for il in range(22) if smm.use_more_bits(il, 22)] == [0, 1, 4, 7, 10, 13, 16, 19, 20, 21]
    assert [il for il in range(8) if smm.use_more_bits(il, 8)] == [0, 3, 6, 7]


def test_q4_k_m_file_has_the_type_mix_and_finite_logits(tmp_path, monkeypatch):
    monkeypatch.setitem(smm.SHAPES, "small", SMALL)
    path = smm.write(tmp_path / "small-q4_k_m.gguf", "small", "q4_k_m")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    six = {0, 3, 6, 7}
    expected = {"token_embd.weight": Q.Q4_K, "output.weight": Q.Q6_K, "output_norm.weight": Q.F32}
    for il in range(8):
        for name in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            expected[f"blk.{il}.{name}.weight"] = Q.Q4_K
        for name in ("attn_v", "ffn_down"):
            expected[f"blk.{il}.{name}.weight"] = Q.Q6_K if il in six else Q.Q4_K
        for name in ("attn_norm", "ffn_norm"):
            expected[f"blk.{il}.{name}.weight"] = Q.F32
    assert types == expected

    model = load_model(open_gguf(path))
    tokens = np.arange(2, 12)
    logits = model.forward(tokens, model.new_cache(16), logits_rows=list(range(len(tokens))))
    assert logits.shape == (len(tokens), SMALL[5])
    assert np.isfinite(logits).all()
    assert 0 < np.abs(logits).max() < 1e3
