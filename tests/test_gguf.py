"""The GGUF loader: real models read right and zero-copy; corrupt files end in one clear error."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from localllm.errors import GGUFError
from localllm.gguf import open_gguf
from localllm.models import load_model
from tiny_models import write_tiny_model


# ---- real models --------------------------------------------------------------


def test_smollm2_matches_gguf_reader(smollm2_path):
    g = open_gguf(smollm2_path)
    ref = gguf.GGUFReader(smollm2_path)
    assert g.architecture == "llama"
    assert set(g.tensors) == {t.name for t in ref.tensors}
    for t in ref.tensors:
        mine = g.tensors[t.name]
        assert mine.qtype == t.tensor_type
        assert mine.dims == tuple(int(d) for d in t.shape)
        assert mine.offset == t.data_offset
        assert mine.n_bytes == t.n_bytes
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        assert g.metadata[key] == field.contents(), key


def test_real_models_facts_and_zero_copy(smollm2_path, gemma3_path):
    s = open_gguf(smollm2_path)
    assert s.tensors["blk.0.attn_k.weight"].shape == (192, 576)
    assert s.tensors["token_embd.weight"].qtype == Q.Q8_0
    assert s.quant_mix()["Q4_1"][0] == 210
    assert s.n_params == 134_515_008
    g = open_gguf(gemma3_path)
    assert g.architecture == "gemma3"
    assert g.tensors["blk.0.ffn_down.weight"].qtype == Q.Q6_K
    assert g.tensors["token_embd.weight"].shape == (262144, 640)
    for f in (s, g):
        for t in f.tensors.values():
            # every tensor is a view into the one memmap: nothing copied
            assert np.shares_memory(t.data, f._mm)
            assert not t.data.flags.writeable


def test_loading_model_copies_no_weights(smollm2_path):
    g = open_gguf(smollm2_path)
    m = load_model(g)
    for layer in m.layers:
        for w in (layer.wq, layer.wk, layer.wv, layer.wo, layer.w_gate, layer.w_up, layer.w_down):
            assert np.shares_memory(w.raw, g._mm)
        assert np.shares_memory(layer.attn_norm, g._mm)


# ---- corruption suite ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> bytes:
    p = write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "llama", qtype=Q.Q4_0, n_vocab=260)
    return p.read_bytes()


def _header_end(data: bytes) -> int:
    """Offset where tensor data starts (tests need it to aim corruptions at the header)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.gguf"
        p.write_bytes(data)
        return open_gguf(p).data_start


def _load(tmp_path, data: bytes, name="c.gguf"):
    p = tmp_path / name
    p.write_bytes(data)
    return open_gguf(p)


def _tensor_field_offset(data: bytes, name: str) -> int:
    """Offset of the n_dims field that follows a tensor's name in the tensor table."""
    needle = struct.pack("<Q", len(name)) + name.encode()
    i = data.rfind(needle)
    assert i > 0
    return i + len(needle)


def test_truncation_at_many_offsets(tmp_path, tiny_bytes):
    end = _header_end(tiny_bytes)
    offsets = sorted(set(list(range(0, min(end, 4096), 7)) + list(range(end, len(tiny_bytes), 997))
                         + [len(tiny_bytes) - 1]))
    for n in offsets:
        with pytest.raises(GGUFError):
            _load(tmp_path, tiny_bytes[:n])
    assert len(offsets) > 100


def test_flipped_header_bytes_never_crash(tmp_path, tiny_bytes):
    end = _header_end(tiny_bytes)
    rng = np.random.default_rng(0)
    ok = bad = 0
    for pos in rng.choice(end, size=min(400, end), replace=False):
        data = bytearray(tiny_bytes)
        data[pos] ^= 1 << int(rng.integers(8))
        try:
            g = _load(tmp_path, bytes(data))
            # a flip in a string or a float may leave a valid file; its tensors must still lie inside it
            for t in g.tensors.values():
                assert g.data_start <= t.offset and t.offset + t.n_bytes <= g.file_size
            ok += 1
        except GGUFError as e:
            assert "\n" not in str(e)
            bad += 1
    assert bad > 50  # most flips in a header are caught


def test_bad_magic_and_version(tmp_path, tiny_bytes):
    with pytest.raises(GGUFError, match="bad magic"):
        _load(tmp_path, b"GGML" + tiny_bytes[4:])
    with pytest.raises(GGUFError, match="unsupported GGUF version 99"):
        _load(tmp_path, tiny_bytes[:4] + struct.pack("<I", 99) + tiny_bytes[8:])


def _patch_tensor(data: bytes, name: str, dims=None, qtype=None, offset=None) -> bytes:
    i = _tensor_field_offset(data, name)
    (n_dims,) = struct.unpack_from("<I", data, i)
    out = bytearray(data)
    if dims is not None:
        for k, d in enumerate(dims):
            struct.pack_into("<Q", out, i + 4 + 8 * k, d)
    j = i + 4 + 8 * n_dims
    if qtype is not None:
        struct.pack_into("<I", out, j, qtype)
    if offset is not None:
        struct.pack_into("<Q", out, j + 4, offset)
    return bytes(out)


def test_offset_past_eof(tmp_path, tiny_bytes):
    data = _patch_tensor(tiny_bytes, "blk.1.ffn_down.weight", offset=10**9 // 32 * 32)
    with pytest.raises(GGUFError, match="runs past the end of the file"):
        _load(tmp_path, data)


def test_misaligned_and_overlapping(tmp_path, tiny_bytes):
    with pytest.raises(GGUFError, match="not aligned"):
        _load(tmp_path, _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", offset=3))
    with pytest.raises(GGUFError, match="overlap"):
        _load(tmp_path, _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", offset=0))


def test_zero_and_absurd_dims(tmp_path, tiny_bytes):
    with pytest.raises(GGUFError, match="zero dimension"):
        _load(tmp_path, _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", dims=[64, 0]))
    with pytest.raises(GGUFError, match="absurd|past the end"):
        _load(tmp_path, _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", dims=[64, 1 << 40]))
    with pytest.raises(GGUFError):
        _load(tmp_path, _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", dims=[64, 1 << 20]))


def test_block_divisibility_and_unknown_type(tmp_path, tiny_bytes):
    with pytest.raises(GGUFError, match="not a multiple of the Q4_0 block size"):
        _load(tmp_path, _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", dims=[48, 64]))
    with pytest.raises(GGUFError, match="unknown tensor type 77"):
        _load(tmp_path, _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", qtype=77))


def test_shape_mismatch_is_caught_at_model_load(tmp_path, tiny_bytes):
    # dims that are valid for the file but wrong for the architecture
    data = _patch_tensor(tiny_bytes, "blk.0.attn_q.weight", dims=[32, 128])
    g = _load(tmp_path, data)
    with pytest.raises(GGUFError, match="blk.0.attn_q.weight.*shape"):
        load_model(g)


def test_missing_key_and_unsupported_arch(tmp_path):
    p = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_embedding_length(64)
    w.add_tensor("token_embd.weight", np.zeros((10, 64), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GGUFError, match="missing required metadata key 'llama.attention.head_count'"):
        load_model(open_gguf(p))
    p2 = tmp_path / "a.gguf"
    w = gguf.GGUFWriter(str(p2), "mamba")
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GGUFError, match=r"unsupported architecture 'mamba' \(supported: gemma3, llama, qwen2\)"):
        load_model(open_gguf(p2))


def test_not_a_file(tmp_path):
    with pytest.raises(GGUFError, match="cannot open"):
        open_gguf(tmp_path / "nope.gguf")
    (tmp_path / "small").write_bytes(b"GGUF")
    with pytest.raises(GGUFError, match="truncated"):
        open_gguf(tmp_path / "small")


def _model_with(tmp_path, name, **meta):
    """A tiny llama whose metadata gets extra or replaced keys (written as int32/strings)."""
    p = write_tiny_model(tmp_path / "base.gguf", "llama", qtype=Q.Q8_0)
    r = gguf.GGUFReader(p)
    out = tmp_path / name
    w = gguf.GGUFWriter(str(out), "llama")
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in meta:
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), vt)
    for k, v in meta.items():
        if isinstance(v, list):
            sub = gguf.GGUFValueType.STRING if isinstance(v[0], str) else gguf.GGUFValueType.INT32
            w.add_key_value(k, v, gguf.GGUFValueType.ARRAY, sub_type=sub)
        else:
            w.add_key_value(k, v, gguf.GGUFValueType.UINT32)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return out


def test_rope_dimension_must_fit_the_head(tmp_path):
    # the RoPE kernel writes up to rope_dim inside each head: a larger value must be refused
    p = _model_with(tmp_path, "rope.gguf", **{"llama.rope.dimension_count": 4096})
    with pytest.raises(GGUFError, match="rope.dimension_count 4096"):
        load_model(open_gguf(p))


def test_tokenizer_larger_than_embedding_is_refused(tmp_path):
    from localllm import LLM

    fields = gguf.GGUFReader(write_tiny_model(tmp_path / "t.gguf", "llama")).fields
    tokens = fields["tokenizer.ggml.tokens"].contents() + [f"<more_{i}>" for i in range(10)]
    types = fields["tokenizer.ggml.token_type"].contents() + [1] * 10
    p = _model_with(tmp_path, "vocab.gguf", **{"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types})
    with pytest.raises(GGUFError, match="tokenizer has 310 tokens but the embedding only 300 rows"):
        LLM(str(p), n_ctx=32)


def test_duplicate_metadata_key(tmp_path, tiny_bytes):
    # rename a later key to the first key's name (same length keeps the layout valid)
    data = bytearray(tiny_bytes)
    a, b = b"general.architecture", b"llama.context_length"
    i = data.find(b)
    assert i > 0 and len(a) == len(b)
    data[i:i + len(b)] = a
    with pytest.raises(GGUFError, match="duplicate metadata key 'general.architecture'"):
        _load(tmp_path, bytes(data))
