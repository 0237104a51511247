"""The compiled decode step gives exactly the Python layer loop's logits.

Both call the same kernels in the same order, so the comparison is bit-for-bit:
any difference means the compiled step skipped, reordered or mis-addressed work.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from localllm.gguf import open_gguf
from localllm.models import load_model
from localllm.quant import dispatch
from tiny_models import write_tiny_model

pytestmark = pytest.mark.skipif(not dispatch.USE_X86, reason="the compiled step serves the AVX2 kernels only")

TINY = {
    "llama": dict(n_layer=2, n_head=4, n_head_kv=2),
    "gemma3": dict(n_layer=6, n_head=4, n_head_kv=1, head_dim=32, sliding_window=8),
    "qwen2": dict(n_layer=2, n_head=4, n_head_kv=2),
}
CASES = [(a, Q.Q8_0) for a in TINY] + [("llama", q) for q in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.F32, Q.F16)]


def _decode_both_ways(model, prompt, n_steps, kv_dtype="f16", split_every=0):
    """Logits (1 + n_steps, vocab) of greedy decoding, with the compiled step and without it."""
    runs = []
    plan = model.decode_plan
    for use_plan in (True, False):
        model.decode_plan = plan if use_plan else None
        cache = model.new_cache(128, kv_dtype)
        rows = [model.forward(prompt, cache)[0]]
        for i in range(n_steps):
            n_split = 2 if split_every and i % split_every == 0 else 1
            rows.append(model.forward([int(rows[-1].argmax())], cache, n_split=n_split)[0])
        runs.append(np.stack(rows))
    model.decode_plan = plan
    return runs


@pytest.mark.parametrize("arch,qtype", CASES, ids=[f"{a}-{q.name}" for a, q in CASES])
@pytest.mark.parametrize("kv_dtype", ["f16", "f32"])
def test_tiny_models_bit_identical(tmp_path, arch, qtype, kv_dtype):
    path = write_tiny_model(tmp_path / "m.gguf", arch, qtype, **TINY[arch])
    model = load_model(open_gguf(path))
    assert model.decode_plan is not None
    prompt = np.random.default_rng(5).integers(0, 300, 6)
    # 30 steps take gemma3's sliding window (8) well past its edge; every 3rd step splits keys
    a, b = _decode_both_ways(model, prompt, 30, kv_dtype, split_every=3)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_types_without_a_fast_kernel_keep_the_python_loop(tmp_path):
    model = load_model(open_gguf(write_tiny_model(tmp_path / "m.gguf", "llama", Q.Q5_1)))
    assert model.decode_plan is None


def test_env_switch_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALLLM_DECODE_STEP", "0")
    model = load_model(open_gguf(write_tiny_model(tmp_path / "m.gguf", "llama", Q.Q8_0)))
    assert model.decode_plan is None


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_real_models_bit_identical(which, smollm2_path, gemma3_path):
    path = smollm2_path if which == "smollm2" else gemma3_path
    model = load_model(open_gguf(path))
    assert model.decode_plan is not None
    prompt = [2, 504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767]  # ids below both vocabularies
    a, b = _decode_both_ways(model, prompt, 8, split_every=2)
    np.testing.assert_array_equal(a, b)
