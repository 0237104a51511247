"""Tokenizers against llama.cpp's own output, plus round-trip and streaming properties.

Round trip `decode(encode(s)) == s` holds wherever llama.cpp's own round trip
is lossless. The two known exceptions, both shared with llama.cpp:
- byte-level BPE drops bytes that have no token. SmolLM2's vocabulary lacks
  0x04, 0x06, 0x13, 0x14, 0x16, 0x1D and the lead bytes 0xC0, 0xC1, 0xF1, 0xF2,
  0xF5..0xFF, so such control characters and code points U+40000..U+BFFFF are lost.
- SentencePiece writes spaces as U+2581, so a literal U+2581 in the input
  decodes as a plain space (Gemma).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localllm.gguf import read_metadata
from localllm.tokenizer import Tokenizer, UnsupportedTokenizer, tokenizer_from_metadata
from localllm.tokenizer.bytelevel import BYTE_TO_CHAR
from localllm.tokenizer.detok import clean_up_spaces
from localllm.tokenizer.pretokenize import SUPPORTED_PRE, PreTokenizer

REFERENCE_FILES = {"smollm2": "smollm2-135m-q4_1.json", "gemma3": "gemma3-270m-q4_k_m.json"}


@pytest.fixture(scope="module")
def metadata(smollm2_path, gemma3_path):
    return {"smollm2": read_metadata(smollm2_path), "gemma3": read_metadata(gemma3_path)}


@pytest.fixture(scope="module")
def toks(metadata) -> dict[str, Tokenizer]:
    return {name: tokenizer_from_metadata(md) for name, md in metadata.items()}


@pytest.fixture(scope="module")
def references(reference_dir):
    return {name: json.loads((reference_dir / f).read_text(encoding="utf-8")) for name, f in REFERENCE_FILES.items()}


@pytest.fixture(scope="module")
def smollm2_missing_bytes(metadata) -> frozenset[int]:
    vocab = set(metadata["smollm2"]["tokenizer.ggml.tokens"])
    return frozenset(b for b in range(256) if BYTE_TO_CHAR[b] not in vocab)


def expected_round_trip(name: str, text: str, missing: frozenset[int]) -> str | None:
    """What decode(encode(text)) must give, or None where llama.cpp is lossy too."""
    if name == "smollm2":
        return None if set(text.encode("utf-8")) & missing else text
    return text.replace("\u2581", " ")


def stream(tok: Tokenizer, ids: list[int]) -> list[str]:
    dec = tok.stream_decoder()
    chunks = [dec.add(i) for i in ids]
    chunks.append(dec.flush())
    return chunks


# -- llama.cpp reference ids ---------------------------------------------------

@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_reference_tokenize(toks, references, name):
    tok = toks[name]
    for entry in references[name]["tokenize"]:
        assert tok.encode(entry["text"]) == entry["ids"], entry["text"]
        assert tok.encode(entry["text"], special=True) == entry["ids_special"], entry["text"]


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_reference_prompts_with_model_bos(toks, references, name):
    tok = toks[name]
    for gen in references[name]["generate"]:
        assert tok.encode(gen["prompt"], add_bos=tok.add_bos) == gen["prompt_ids"], gen["prompt"]


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_reference_greedy_text(toks, references, name):
    tok = toks[name]
    for gen in references[name]["generate"]:
        assert tok.decode(gen["greedy_ids"]) == gen["greedy_text"]
        assert "".join(stream(tok, gen["greedy_ids"])) == gen["greedy_text"]


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_reference_round_trip(toks, references, smollm2_missing_bytes, name):
    tok = toks[name]
    for entry in references[name]["tokenize"]:
        want = expected_round_trip(name, entry["text"], smollm2_missing_bytes)
        assert want is not None
        assert tok.decode(entry["ids"]) == want
        assert tok.decode(entry["ids_special"]) == want   # control tokens render as their text


# -- special tokens and metadata ---------------------------------------------------

def test_model_facts(toks):
    smol, gemma = toks["smollm2"], toks["gemma3"]
    assert smol.vocab_size == 49152 and gemma.vocab_size == 262144
    assert (smol.bos_id, smol.eos_id, smol.add_bos) == (1, 2, False)
    assert (gemma.bos_id, gemma.eos_id, gemma.add_bos) == (2, 1, True)
    assert smol.token_text(1) == "<|im_start|>" and gemma.token_text(106) == "<end_of_turn>"
    assert gemma.eot_id == 106
    assert {0, 2} <= smol.stop_ids
    # Gemma's </s> is user-defined in the file, but llama.cpp promotes it to a control, end-of-generation token.
    assert gemma.token_text(212) == "</s>" and gemma.is_control(212)
    assert {1, 106, 212} <= gemma.stop_ids
    assert not gemma.is_control(217)   # <html>: user-defined, stays plain
    assert all(smol.is_control(i) for i in range(17)) and not smol.is_control(17)


def test_special_text_needs_special_flag(toks):
    smol, gemma = toks["smollm2"], toks["gemma3"]
    assert smol.encode("<|im_start|>user", special=True)[0] == 1
    assert 1 not in smol.encode("<|im_start|>user")
    assert gemma.encode("<end_of_turn>", special=True) == [106]
    assert 106 not in gemma.encode("<end_of_turn>")
    assert gemma.encode("</s>", special=True) == [212]
    assert 212 not in gemma.encode("a</s>b")
    # user-defined tokens are always matched
    assert gemma.encode("<html>") == [217]


def test_control_tokens_render_as_text_by_default(toks):
    gemma, smol = toks["gemma3"], toks["smollm2"]
    hello = gemma.encode("Hello")
    assert gemma.decode([gemma.bos_id, *hello]) == "<bos>Hello"
    assert gemma.decode([gemma.bos_id, *hello], special=False) == "Hello"
    assert smol.decode([1, 2]) == "<|im_start|><|im_end|>"
    assert smol.decode([1, 2], special=False) == ""
    dec = smol.stream_decoder(special=False)
    assert dec.add(1) == "" and dec.flush() == ""


def test_decode_rejects_out_of_range_ids(toks):
    with pytest.raises(ValueError):
        toks["smollm2"].decode([49152])
    with pytest.raises(ValueError):
        toks["gemma3"].decode([-1])


def test_unknown_pre_tokenizer_is_a_clear_error(metadata):
    md = dict(metadata["smollm2"])
    md["tokenizer.ggml.pre"] = "no-such-pre"
    with pytest.raises(UnsupportedTokenizer) as err:
        tokenizer_from_metadata(md)
    message = str(err.value)
    assert "no-such-pre" in message
    for name in ("smollm", "llama3", "llama-bpe", "qwen2", "gpt-2", "default"):
        assert name in message
    assert isinstance(err.value, ValueError)


def test_unknown_model_is_a_clear_error(metadata):
    md = dict(metadata["smollm2"])
    md["tokenizer.ggml.model"] = "t5"
    with pytest.raises(UnsupportedTokenizer, match="t5"):
        tokenizer_from_metadata(md)


# -- streaming ------------------------------------------------------------------

STREAM_TEXTS = [
    "emoji: 😀 🚀 👍🏽 🇫🇷 👨\u200d👩\u200d👧\u200d👦",
    "日本語のテキストです。中文测试：你好，世界！",
    "rare CJK 𠜎𠜱𠝹 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑∫√∞",
    "한국어 문장입니다. नमस्ते दुनिया مرحبا بالعالم",
]


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
@pytest.mark.parametrize("text", STREAM_TEXTS)
def test_stream_never_splits_a_character(toks, name, text):
    tok = toks[name]
    ids = tok.encode(text)
    chunks = stream(tok, ids)
    assert "".join(chunks) == tok.decode(ids) == text
    assert all("\ufffd" not in c for c in chunks)


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_stream_texts_really_split_characters_across_tokens(toks, name):
    # Guard for the test above: some token must carry only part of a character.
    tok = toks[name]
    partial = [i for text in STREAM_TEXTS for i in tok.encode(text) if "\ufffd" in tok.decode([i])]
    assert partial


def test_stream_invalid_bytes_are_replaced(toks):
    gemma = toks["gemma3"]
    lead = gemma.encode("\U0002070e")[0]       # first byte-fallback token of a 4-byte character
    assert gemma.token_text(lead) == "<0xF0>"
    dec = gemma.stream_decoder()
    assert dec.add(lead) == ""
    assert dec.flush() == "\ufffd"
    a = gemma.encode("a")[0]
    assert dec.add(lead) == "" and dec.add(a) == "\ufffda"
    assert gemma.decode([lead]) == "\ufffd"

    smol = toks["smollm2"]
    lead = smol.encode("😀")[0]
    dec = smol.stream_decoder()
    assert dec.add(lead) == "" and dec.flush() == "\ufffd"


# -- properties -----------------------------------------------------------------

_PIECES = list(" \t\n\r\u00a0\u3000\u2581abcXYZ019٣😀👍🏽🇫🇷中文한ñé'?!.,<>|_\x00\u200d") + [
    "<|im_start|>", "<end_of_turn>", "</s>", "<bos>", "<html>", "  ", "\n\n", "'s", "'LL", "123456",
]
texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=60),
    st.lists(st.sampled_from(_PIECES), max_size=25).map("".join),
)


@settings(max_examples=150, deadline=None)
@given(text=texts, special=st.booleans())
def test_property_encode_decode(toks, smollm2_missing_bytes, text, special):
    for name, tok in toks.items():
        ids = tok.encode(text, special=special)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        decoded = tok.decode(ids)
        want = expected_round_trip(name, text, smollm2_missing_bytes)
        if want is not None:
            assert decoded == want
        chunks = stream(tok, ids)
        assert "".join(chunks) == decoded
        if want is not None:
            assert all("\ufffd" not in c for c in chunks) or "\ufffd" in text


@settings(max_examples=100, deadline=None)
@given(text=texts)
def test_property_bos(toks, text):
    for tok in toks.values():
        assert tok.encode(text, add_bos=True) == [tok.bos_id, *tok.encode(text)]


# -- pre-tokenizers and detokenizer details (no model needed) ---------------------

@pytest.mark.parametrize("pre, text, words", [
    ("llama3", "12345 it'S", ["123", "45", " it", "'S"]),
    ("llama-bpe", "a\n\n  b", ["a", "\n\n", " ", " b"]),
    ("qwen2", "x 123", ["x", " ", "1", "2", "3"]),
    ("gpt-2", "12345 it'S", ["12345", " it", "'", "S"]),
    ("gpt-2", "a\x1c\x1cb", ["a", "\x1c\x1c", "b"]),   # U+001C is not whitespace for llama.cpp
    ("smollm", "a 12", ["a", " ", "1", "2"]),
    ("default", "hello, world 12345", ["hello", ",", " world", " ", "123", "45"]),
])
def test_pre_tokenizer_splits(pre, text, words):
    assert PreTokenizer(pre).split(text) == words


@settings(max_examples=100, deadline=None)
@given(text=texts)
def test_property_pre_tokenizers_keep_all_text(text):
    for pre in SUPPORTED_PRE:
        assert "".join(PreTokenizer(pre).split(text)) == text


def test_clean_up_spaces_matches_llama_cpp_passes():
    assert clean_up_spaces(b"Hello , world . Yes ! Why ?") == b"Hello, world. Yes! Why?"
    assert clean_up_spaces(b"I 'm sure they 're here and we 've 's") == b"I'm sure they're here and we've's"
    assert clean_up_spaces(b"I 'll do n 't 'd") == b"I 'll do n 't 'd"
    assert clean_up_spaces(b"here ' ok") == b"here'ok"
    assert clean_up_spaces(b"") == b""
