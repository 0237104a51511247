"""Quantized formats and matmul kernels, checked against gguf-py's numpy reference."""

import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from localllm.quant import SUPPORTED_TYPES, QuantTensor, UnsupportedQuantType, dequantize, linear
from localllm.quant import dispatch
from localllm.quant.convert import TARGETS, quantize_gguf
from localllm.quant.gemm_tiles import M_CHUNK
from localllm.quant.formats import FORMATS
from localllm.quant.matmul_generic import mm_generic
from quant_data import random_tensor

# Formats whose kernels quantize the activation to int8 on the x86 paths.
INT_DOT = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K}


def assert_bits_equal(a, b):
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a32.shape == b32.shape
    bad = a32.view(np.uint32) != b32.view(np.uint32)
    assert not bad.any(), f"{bad.sum()} of {bad.size} values differ, e.g. {a32[bad][:4]} vs {b32[bad][:4]}"


K_QUANTS = {T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS}


def q8_roundtrip(x, qtype):
    """What the int8 activation path sees, in llama.cpp's format for this weight type.

    Q8_0/Q8_1: blocks of 32, codes rint(x * 127/amax), scale amax/127 stored as f16.
    Q8_K: blocks of 256, the largest-magnitude element maps to -127, f32 scale.
    """
    m, k = x.shape
    if qtype in K_QUANTS:
        blocks = x.reshape(m, k // 256, 256).astype(np.float32)
        idx = np.abs(blocks).argmax(axis=-1)[..., None]
        mx = np.take_along_axis(blocks, idx, axis=-1)
        iscale = np.divide(np.float32(-127), mx, out=np.zeros_like(mx), where=mx != 0)
        q = np.minimum(np.rint(blocks * iscale), 127)
        d = np.divide(np.float32(1), iscale, out=np.zeros_like(iscale), where=iscale != 0)
        return (q * d).reshape(m, k)
    blocks = x.reshape(m, k // 32, 32)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax > 0)
    d16 = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
    return (np.rint(blocks * inv) * d16).reshape(m, k)


def check_linear(qtype, raw, n, k, x):
    """linear() and the portable kernel against float64 dequant(W) @ x."""
    w = QuantTensor(raw, qtype, (n, k))
    wf = dequantize(raw, qtype, (n, k)).astype(np.float64)
    out = linear(x, w)
    assert out.shape == (x.shape[0], n) and out.dtype == np.float32
    exact = x.astype(np.float64) @ wf.T
    scale = np.abs(exact).max() + 1e-30
    if dispatch.USE_X86 and qtype in INT_DOT:
        # int8 activations: tight against the rounded activation, loose against f32
        seen = q8_roundtrip(x, qtype).astype(np.float64) @ wf.T
        assert np.abs(out - seen).max() / scale < 2e-3
        assert np.abs(out - exact).max() / scale < 3e-2
    else:
        assert np.abs(out - exact).max() / scale < 1e-5
    portable = np.empty_like(out)
    mm_generic(w.raw, FORMATS[qtype].code, np.ascontiguousarray(x, np.float32), portable, 3)
    assert np.abs(portable - exact).max() / scale < 1e-5


# ---- dequantization ------------------------------------------------------------


@pytest.mark.parametrize("qtype", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_dequantize_bit_exact(qtype):
    rng = np.random.default_rng(int(qtype))
    n, k = 7, 512
    raws = [random_tensor(qtype, n, k, rng, finite=False)]
    try:  # blocks made by gguf's own quantizer, where it has one
        raws.append(np.ascontiguousarray(gguf.quants.quantize(rng.standard_normal((n, k)).astype(np.float32), qtype)).view(np.uint8))
    except NotImplementedError:
        pass
    for raw in raws:
        ref = gguf.quants.dequantize(raw, qtype).reshape(n, k)
        assert_bits_equal(dequantize(raw, qtype, (n, k)), ref)


def test_dequantize_1d_and_readonly_memmap(tmp_path):
    rng = np.random.default_rng(5)
    raw = random_tensor(T.Q4_K, 3, 256, rng)
    path = tmp_path / "w.bin"
    raw.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)
    assert_bits_equal(dequantize(mm, T.Q4_K, (3, 256)), gguf.quants.dequantize(raw, T.Q4_K))
    assert dequantize(raw[0], T.Q4_K, (256,)).shape == (256,)


def test_unsupported_type_is_named():
    raw = np.zeros((2, 66), np.uint8)
    with pytest.raises(UnsupportedQuantType, match="IQ2_XXS"):
        QuantTensor(raw, T.IQ2_XXS, (2, 256))
    with pytest.raises(UnsupportedQuantType, match="IQ2_XXS"):
        dequantize(raw, T.IQ2_XXS, (2, 256))


# ---- matmul --------------------------------------------------------------------


@pytest.mark.parametrize("qtype", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_linear_all_paths(qtype):
    rng = np.random.default_rng(100 + int(qtype))
    for n, k in ((37, 512), (300, 256)):
        raw = random_tensor(qtype, n, k, rng)
        for m in (1, 5, M_CHUNK + 7):  # matvec, small M, two row chunks
            check_linear(qtype, raw, n, k, rng.standard_normal((m, k)).astype(np.float32))


def test_linear_out_buffer_and_1d():
    rng = np.random.default_rng(9)
    raw = random_tensor(T.Q8_0, 20, 64, rng)
    w = QuantTensor(raw, T.Q8_0, (20, 64))
    x = rng.standard_normal((2, 64)).astype(np.float32)
    out = np.full((2, 20), np.nan, np.float32)
    assert linear(x, w, out) is out and np.isfinite(out).all()
    np.testing.assert_allclose(linear(x[0], w), out[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        linear(x, w, np.empty((2, 21), np.float32))
    with pytest.raises(ValueError):
        linear(np.ones((2, 65), np.float32), w)


def test_portable_switch():
    code = "from localllm.quant import kernel_path; print(kernel_path())"
    env = dict(os.environ, LOCALLLM_PORTABLE="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "portable"


# ---- real model tensors -------------------------------------------------------


def _spot_check(reader, wanted, rows=300):
    """For each wanted type: dequantize bit-exactly and matmul the first tensor of it
    (F32 ones are often only 1-D norms: those become a 1-row matrix)."""
    rng = np.random.default_rng(0)
    seen = set()
    for t in reader.tensors:
        if t.tensor_type not in wanted or t.tensor_type in seen:
            continue
        seen.add(t.tensor_type)
        k = int(t.shape[0])
        raw = np.asarray(t.data).view(np.uint8)
        raw = raw.reshape(int(t.n_elements) // k, -1)[:rows]  # (n, row_bytes) slice of the memmap
        n = raw.shape[0]
        ref = gguf.quants.dequantize(np.ascontiguousarray(raw), t.tensor_type).reshape(n, k)
        assert_bits_equal(dequantize(raw, t.tensor_type, (n, k)), ref)
        for m in (1, 4, M_CHUNK + 3):
            check_linear(t.tensor_type, raw, n, k, rng.standard_normal((m, k)).astype(np.float32))
    assert seen == set(wanted)


def test_smollm2_tensors(smollm2_path):
    _spot_check(gguf.GGUFReader(smollm2_path), {T.Q4_1, T.Q8_0, T.F32})


def test_gemma3_tensors(gemma3_path):
    _spot_check(gguf.GGUFReader(gemma3_path), {T.Q5_0, T.Q8_0, T.Q4_K, T.Q6_K, T.F32})


# ---- quantize_gguf ---------------------------------------------------------------


@pytest.fixture
def tiny_gguf(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "token_embd.weight": rng.standard_normal((40, 64)).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((64, 64)).astype(np.float32),
        "blk.0.ffn_down.weight": rng.standard_normal((64, 48)).astype(np.float32),  # 48 % 32 != 0
        "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float32),
    }
    q8 = rng.standard_normal((32, 64)).astype(np.float32)
    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_token_list(["<s>", "</s>", "hi"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.5])
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(q8, T.Q8_0), raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tensors["blk.0.ffn_up.weight"] = gguf.quants.dequantize(gguf.quants.quantize(q8, T.Q8_0), T.Q8_0)
    return path, tensors


def _fields(reader):
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.") and k != "general.file_type"}


@pytest.mark.parametrize("type_name", list(TARGETS))
def test_quantize_gguf_round_trip(tiny_gguf, tmp_path, type_name):
    src, originals = tiny_gguf
    dst = tmp_path / "out" / f"tiny-{type_name}.gguf"
    dst.parent.mkdir()
    calls = []
    quantize_gguf(src, dst, type_name, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5)
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    assert _fields(a) == _fields(b)
    assert b.fields["general.file_type"].contents() == int(TARGETS[type_name][1])
    target = TARGETS[type_name][0]
    got = {t.name: t for t in b.tensors}
    assert set(got) == set(originals)
    for name, orig in originals.items():
        t = got[name]
        expect = target if orig.ndim == 2 and orig.shape[1] % gguf.GGML_QUANT_SIZES[target][0] == 0 else T.F32
        assert t.tensor_type == expect, name
        back = dequantize(np.asarray(t.data).view(np.uint8).reshape(orig.shape[0] if orig.ndim == 2 else 1, -1), t.tensor_type, orig.shape)
        tol = {"f16": 1e-3, "bf16": 1e-2, "q8_0": 2e-2}.get(type_name, 0.25)
        assert np.abs(back - orig).max() <= tol * np.abs(orig).max(), name
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]  # no temp file left behind


def test_quantize_gguf_failure_leaves_no_output(tiny_gguf, tmp_path):
    src, _ = tiny_gguf
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def boom(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_gguf(src, out_dir / "x.gguf", "q4_0", progress=boom)
    assert list(out_dir.iterdir()) == []
    with pytest.raises(ValueError, match="q3_k"):
        quantize_gguf(src, out_dir / "x.gguf", "q3_k")
    assert list(out_dir.iterdir()) == []


def test_linear_with_no_rows():
    """A prompt chunk that asks for no logits rows sends an empty batch to the LM head."""
    rng = np.random.default_rng(4)
    for qtype in (T.Q4_0, T.Q4_K, T.F32):
        w = QuantTensor(random_tensor(qtype, 8, 256, rng), qtype, (8, 256))
        assert linear(np.empty((0, 256), np.float32), w).shape == (0, 8)


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.BF16])
@pytest.mark.parametrize("k", [35, 64])  # 35: a K that is not a multiple of the 8-lane step
def test_float_weights_any_k_and_rows_invariant(qtype, k):
    """Float weights: close to float64, and each row of an M-row call (the x86 kernel blocks
    rows by four) equals the row alone, bit for bit."""
    rng = np.random.default_rng(k)
    n = 19
    w32 = rng.standard_normal((n, k)).astype(np.float32)
    if qtype == T.F32:
        raw, wf = w32, w32
    elif qtype == T.F16:
        raw = w32.astype(np.float16)
        wf = raw.astype(np.float32)
    else:
        raw = (w32.view(np.uint32) >> 16).astype(np.uint16)
        wf = (raw.astype(np.uint32) << 16).view(np.float32)
    w = QuantTensor(raw.view(np.uint8).reshape(n, -1), qtype, (n, k))
    x = rng.standard_normal((9, k)).astype(np.float32)
    got = linear(x, w)  # (9, n)
    np.testing.assert_allclose(got, x.astype(np.float64) @ wf.T.astype(np.float64), rtol=1e-5, atol=1e-5)
    alone = np.stack([linear(x[i], w) for i in range(len(x))])
    assert np.array_equal(got.view(np.uint32), alone.view(np.uint32))
