"""Each class of malformed GGUF that used to load and give garbage is refused with one clear line."""

from __future__ import annotations

import math
import struct

import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

from gguf_surgery import add_key, drop_key, gguf_string, layout, patch, set_value, splice_header
from localllm.errors import LocalLLMError
from localllm.gguf import open_gguf
from localllm.models import load_model
from tiny_models import write_tiny_model


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> bytes:
    """A 2-layer llama with Q4_1 matrices and F32 norms (head size 16)."""
    path = write_tiny_model(tmp_path_factory.mktemp("base") / "base.gguf", "llama", Q.Q4_1)
    return path.read_bytes()


def _load(tmp_path, data: bytes, name: str = "c.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return load_model(open_gguf(path))


def refusal(tmp_path, data: bytes) -> str:
    """The one-line message a corrupt file is refused with."""
    with pytest.raises(LocalLLMError) as e:
        _load(tmp_path, data)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 500, msg[:1000]
    return msg


def test_base_file_loads(tmp_path, base):
    model = _load(tmp_path, base)
    assert model.cfg.n_layer == 2 and model.cfg.head_dim == 16


# ---- 1. a tensor's type changed to a smaller one --------------------------------


@pytest.mark.parametrize("name, new_type", [
    ("blk.0.attn_q.weight", Q.Q4_0),
    ("blk.0.attn_q.weight", Q.IQ4_NL),
    ("blk.0.attn_norm.weight", Q.F16),
])
def test_smaller_type_no_longer_fills_its_slot(tmp_path, base, name, new_type):
    lay = layout(base)
    i = next(k for k, t in enumerate(lay.tensors) if t.name == name)
    msg = refusal(tmp_path, patch(base, lay.tensors[i].type_pos, "<I", new_type))
    nxt = lay.tensors[i + 1].name
    assert msg.startswith(f"tensor {nxt!r}: data offset ")
    assert f"after {name!r} ({new_type.name}, " in msg


def test_smaller_last_tensor_leaves_unexplained_bytes(tmp_path, base):
    last = layout(base).tensors[-1]
    msg = refusal(tmp_path, patch(base, last.type_pos, "<I", Q.Q4_0))
    assert msg.endswith("a tensor's type or shape does not match the file's layout")
    assert f"follow the last tensor, {last.name!r} (Q4_0, " in msg


def test_swapped_offsets_of_equal_tensors_are_refused(tmp_path, base):
    lay = layout(base)
    k, v = lay.tensor("blk.0.attn_k.weight"), lay.tensor("blk.0.attn_v.weight")
    data = patch(base, k.offset_pos, "<Q", v.offset)
    data = patch(data, v.offset_pos, "<Q", k.offset)
    assert "'blk.0.attn_k.weight': data offset" in refusal(tmp_path, data)


# ---- 2. block_count that does not match the tensors ------------------------------


def test_lowered_block_count_leaves_tensors_unused(tmp_path, base):
    kv = layout(base).kv("llama.block_count")
    msg = refusal(tmp_path, patch(base, kv.value_pos, "<I", 1))
    n = len(layout(base).tensors)
    assert msg.startswith(f"9 of {n} tensors are not used by the llama model, first 'blk.1.attn_norm.weight'")


def test_raised_block_count_misses_a_tensor(tmp_path, base):
    kv = layout(base).kv("llama.block_count")
    assert refusal(tmp_path, patch(base, kv.value_pos, "<I", 3)) == "missing required tensor 'blk.2.attn_norm.weight'"


def test_renamed_tensor_is_a_missing_tensor(tmp_path, base):
    t = layout(base).tensor("blk.0.attn_q.weight")
    data = patch(base, t.start + 8 + len("blk.0.attn_"), "<B", ord("z"))
    assert refusal(tmp_path, data) == "missing required tensor 'blk.0.attn_q.weight'"


# ---- 3. hyperparameters outside their range -------------------------------------


@pytest.mark.parametrize("value", [math.nan, -1.0, 0.0, math.inf, 0.5])
def test_bad_rope_freq_base(tmp_path, base, value):
    kv = layout(base).kv("llama.rope.freq_base")
    msg = refusal(tmp_path, patch(base, kv.value_pos, "<f", value))
    assert msg.startswith("metadata 'llama.rope.freq_base' must be finite and > 1, got ")


@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf, 0.0, 2.0])
def test_bad_rms_epsilon(tmp_path, base, value):
    kv = layout(base).kv("llama.attention.layer_norm_rms_epsilon")
    msg = refusal(tmp_path, patch(base, kv.value_pos, "<f", value))
    assert msg.startswith("metadata 'llama.attention.layer_norm_rms_epsilon' must be finite and > 0 and < 1")


@pytest.mark.parametrize("key, value, expected", [
    ("llama.attention.head_count_kv", 3, "head_count 4 is not a multiple of head_count_kv 3"),
    ("llama.attention.head_count_kv", 1, "tensor 'blk.0.attn_k.weight' has shape [32, 64], expected [16, 64]"),
    ("llama.attention.head_count", 6, "embedding_length 64 is not a multiple of head_count 6"),
    ("llama.embedding_length", 96, "tensor 'token_embd.weight' has shape [300, 64], expected [300, 96]"),
    ("llama.feed_forward_length", 64, "tensor 'blk.0.ffn_gate.weight' has shape [128, 64], expected [64, 64]"),
    ("llama.context_length", 0, "metadata 'llama.context_length' must be a positive integer"),
    ("llama.block_count", 1 << 30, "metadata 'llama.block_count' must be a positive integer up to 16777216"),
])
def test_bad_integer_hyperparameters(tmp_path, base, key, value, expected):
    kv = layout(base).kv(key)
    msg = refusal(tmp_path, patch(base, kv.value_pos, "<I", value))
    assert msg.startswith(expected), msg


@pytest.mark.parametrize("key, value, expected", [
    ("llama.rope.dimension_count", 8, "rope.dimension_count 8 must equal the head size 16 for llama"),
    ("llama.rope.dimension_count", 15, "rope.dimension_count 15 must be even"),
    ("llama.vocab_size", 299, "metadata llama.vocab_size is 299 but token_embd.weight has 300 rows"),
    ("llama.attention.key_length", 0, "metadata 'llama.attention.key_length' must be a positive integer"),
])
def test_added_keys_that_contradict_the_model(tmp_path, base, key, value, expected):
    msg = refusal(tmp_path, add_key(base, key, V.UINT32, struct.pack("<I", value)))
    assert msg.startswith(expected), msg


@pytest.mark.parametrize("value", [-2.0, math.nan, 1e-9])
def test_bad_rope_scaling_factor(tmp_path, base, value):
    msg = refusal(tmp_path, add_key(base, "llama.rope.scaling.factor", V.FLOAT32, struct.pack("<f", value)))
    assert msg.startswith("metadata 'llama.rope.scaling.factor' must be ")


def test_rope_scaling_factor_applies_without_a_type(tmp_path, base):
    # llama.cpp reads the factor whatever the (none/linear) type says, and when the type is absent
    model = _load(tmp_path, add_key(base, "llama.rope.scaling.factor", V.FLOAT32, struct.pack("<f", 4.0)))
    assert model.cfg.rope_scale == 4.0


def test_gemma3_requires_its_sliding_window(tmp_path):
    path = write_tiny_model(tmp_path / "g.gguf", "gemma3", Q.Q8_0, n_head=4, n_head_kv=1, head_dim=32)
    with pytest.raises(LocalLLMError, match="^missing required metadata key 'gemma3.attention.sliding_window'$"):
        load_model(open_gguf(path))


# ---- 4. required keys, and keys damaged by a flipped byte --------------------------


@pytest.mark.parametrize("key", ["llama.context_length", "llama.attention.layer_norm_rms_epsilon",
                                 "llama.block_count", "llama.feed_forward_length"])
def test_required_key_dropped(tmp_path, base, key):
    assert refusal(tmp_path, drop_key(base, key)) == f"missing required metadata key {key!r}"


@pytest.mark.parametrize("key", ["llama.rope.freq_base", "llama.block_count", "llama.attention.head_count_kv"])
def test_flipped_byte_in_a_key_name(tmp_path, base, key):
    kv = layout(base).kv(key)
    pos = kv.start + 8 + len(key) - 2  # inside the key's last word
    data = bytearray(base)
    data[pos] ^= 0x01
    damaged = data[kv.start + 8:kv.start + 8 + len(key)].decode()
    msg = refusal(tmp_path, bytes(data))
    assert msg == f"metadata key {key!r} is missing but the file has {damaged!r}, one character off: " \
                  f"the key looks corrupted"


def test_optional_key_really_missing_takes_its_default(tmp_path, base):
    assert _load(tmp_path, drop_key(base, "llama.rope.freq_base")).cfg.rope_base == 10000.0


# ---- 5. a value of the wrong type --------------------------------------------------


@pytest.mark.parametrize("key, vtype, payload, expected", [
    ("llama.rope.freq_base", V.STRING, gguf_string("fast"), "must be a float, got string 'fast'"),
    ("llama.rope.freq_base", V.UINT32, struct.pack("<I", 10000), "must be a float, got 10000"),
    ("llama.attention.layer_norm_rms_epsilon", V.BOOL, b"\x01", "must be a float, got True"),
    ("llama.block_count", V.FLOAT32, struct.pack("<f", 2.0), "must be a positive integer up to 16777216, got 2.0"),
    ("llama.block_count", V.STRING, gguf_string("two"), "must be a positive integer up to 16777216, got string 'two'"),
    ("llama.attention.head_count", V.ARRAY, struct.pack("<IQ2I", V.UINT32, 2, 4, 8),
     "per-layer values array of 2 [4, 8] are not supported"),
])
def test_value_of_the_wrong_type(tmp_path, base, key, vtype, payload, expected):
    msg = refusal(tmp_path, set_value(base, key, vtype, payload))
    assert msg.startswith(f"metadata {key!r}") and msg.endswith(expected), msg


@pytest.mark.parametrize("key, vtype, payload, expected", [
    ("tokenizer.ggml.tokens", V.UINT8, b"\x07", "must be an array of strings, got 7"),
    ("tokenizer.ggml.merges", V.ARRAY, struct.pack("<IQ3I", V.UINT32, 3, 1, 2, 3),
     "must be an array of strings, got array of 3 [1, 2, 3]"),
    ("tokenizer.ggml.token_type", V.ARRAY, struct.pack("<IQ", V.STRING, 1) + gguf_string("x"),
     "must be an array of integers, got array of 1 ['x']"),
    ("tokenizer.ggml.bos_token_id", V.STRING, gguf_string("one"), "must be an integer, got string 'one'"),
    ("tokenizer.ggml.add_bos_token", V.UINT8, b"\x01", "must be a boolean, got 1"),
    ("tokenizer.ggml.model", V.STRING, gguf_string("gpt2" * 100),
     "must be a short name (at most 64 printable ASCII characters), got string 'gpt2gpt2"),
    ("general.architecture", V.STRING, gguf_string("llama\n"), "must be a short name (at most 64 printable "
                                                               "ASCII characters), got string 'llama\\n'"),
])
def test_standard_keys_of_the_wrong_type_are_refused_at_open(tmp_path, base, key, vtype, payload, expected):
    path = tmp_path / "t.gguf"
    path.write_bytes(set_value(base, key, vtype, payload))
    with pytest.raises(LocalLLMError) as e:
        open_gguf(path)
    msg = str(e.value)
    assert msg.startswith(f"metadata {key!r} {expected}"), msg
    assert len(msg) < 500


def test_uniform_per_layer_array_is_accepted(tmp_path, base):
    payload = struct.pack("<IQ2I", V.UINT32, 2, 4, 4)
    assert _load(tmp_path, set_value(base, "llama.attention.head_count", V.ARRAY, payload)).cfg.n_head == 4


# ---- 6. nested arrays --------------------------------------------------------------


def _nested(depth: int) -> bytes:
    payload = struct.pack("<IQ", V.UINT8, 1) + b"\x07"
    for _ in range(depth - 1):
        payload = struct.pack("<IQ", V.ARRAY, 1) + payload
    return payload


def test_arrays_nested_900_deep_are_refused(tmp_path, base):
    msg = refusal(tmp_path, add_key(base, "junk.deep", V.ARRAY, _nested(900)))
    assert msg == "metadata 'junk.deep': arrays nested more than 4 deep"


def test_arrays_nested_a_little_are_read(tmp_path, base):
    path = tmp_path / "n.gguf"
    path.write_bytes(add_key(base, "junk.nested", V.ARRAY, _nested(4)))
    assert open_gguf(path).metadata["junk.nested"] == [[[[7]]]]


# ---- 7. names and values from the file are quoted short ----------------------------


def test_flipped_tensor_name_length(tmp_path, base):
    # the probe's case: an 18 MB "name" used to be printed whole
    first = layout(base).tensors[0]
    msg = refusal(tmp_path, patch(base, first.start, "<Q", 18_000_000))
    assert msg == "tensor name #0 is 18000000 bytes long (at most 63 allowed)"


def test_long_binary_key_is_quoted_short(tmp_path, base):
    key = b"llama.\n\xff\x00" + bytes(range(256)) * 40
    data = splice_header(base, layout(base).kvs[-1].end, layout(base).kvs[-1].end,
                         gguf_string(key) + struct.pack("<I", 99), kv_delta=1)
    msg = refusal(tmp_path, data)
    assert msg.startswith("metadata 'llama.\\n\ufffd\\x00\\x00\\x01")  # invalid UTF-8 shows as U+FFFD
    assert msg.endswith("...: unknown metadata value type 99")


def test_long_string_value_is_quoted_short(tmp_path, base):
    junk = "x\n\x00" * 40_000
    msg = refusal(tmp_path, set_value(base, "llama.rope.freq_base", V.STRING, gguf_string(junk)))
    assert msg.startswith("metadata 'llama.rope.freq_base' must be a float, got string 'x\\n\\x00x")
    assert msg.endswith("...")
    msg = refusal(tmp_path, add_key(base, "llama.rope.scaling.type", V.STRING, gguf_string(junk)))
    assert msg.startswith("rope scaling type 'x\\n") and "..." in msg


def test_long_duplicate_key_is_quoted_short(tmp_path, base):
    key = "k" * 50_000
    data = add_key(add_key(base, key, V.UINT8, b"\x01"), key, V.UINT8, b"\x02")
    assert refusal(tmp_path, data) == f"duplicate metadata key {'k' * 60!r}..."


def test_splice_helper_keeps_a_valid_file(tmp_path, base):
    # the surgery itself must not be what breaks a file
    same = splice_header(base, 24, 24, b"")
    assert same == base
    model = _load(tmp_path, add_key(base, "junk.pad", V.STRING, gguf_string("abc")))
    assert model.cfg.n_layer == 2
