"""The vocabulary as llama.cpp sees it: pieces, scores, attributes, special ids.

Everything here is read from GGUF metadata. Token attributes follow llama.cpp,
including its text-based overrides: some tokens that the file does not mark as
control (Gemma's `</s>`, for example) are promoted to control because their
text says they end a turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import UnsupportedTokenizer
from .pretokenize import pre_config

# Attribute bits (llama.cpp's llama_token_attr).
NORMAL = 1 << 2
UNKNOWN = 1 << 1
UNUSED = 1 << 3
CONTROL = 1 << 4
USER_DEFINED = 1 << 5
BYTE = 1 << 6
UNDEFINED = 0

# GGUF token_type values -> attribute bits.
_TYPE_TO_ATTR = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}

# Token texts that llama.cpp treats as "end of turn" candidates, in priority
# order (llama.cpp takes whichever its hash map yields first; we take the first
# listed so the choice is deterministic).
_EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
_EOM_TEXTS = ("<|eom_id|>",)
# Fill-in-the-middle tokens: llama.cpp promotes them to control as well, and
# pad/repo/file-separator ones also end generation.
_FIM_TEXTS = {
    "pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
            "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
            "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
            "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "sep": ("<|file_sep|>",),
}
# Texts that end generation ("EOG") and are forced to control type.
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
    "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
    "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
    "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
))


@dataclass
class Vocab:
    model: str                      # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str
    tokens: list[str]
    scores: list[float]
    attrs: list[int]
    token_to_id: dict[str, int]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    eog_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def is_control(self, token_id: int) -> bool:
        return bool(self.attrs[token_id] & CONTROL)


def _get(md: dict[str, Any], key: str, default: Any = None) -> Any:
    return md.get("tokenizer.ggml." + key, default)


def load_vocab(md: dict[str, Any]) -> Vocab:
    model = _get(md, "model")
    if model not in ("llama", "gpt2"):
        raise UnsupportedTokenizer(
            f"unsupported tokenizer.ggml.model {model!r}; supported: 'llama' (SentencePiece), 'gpt2' (byte-level BPE)")
    tokens = _get(md, "tokens")
    if not tokens:
        raise UnsupportedTokenizer("GGUF metadata has no tokenizer.ggml.tokens")
    n = len(tokens)
    if not all(isinstance(t, str) for t in tokens):
        raise UnsupportedTokenizer("tokenizer.ggml.tokens must be a list of strings")
    for key in ("scores", "token_type"):
        vals = _get(md, key, None)
        if vals is not None and (len(vals) != n or not all(isinstance(v, (int, float)) for v in vals)):
            raise UnsupportedTokenizer(f"tokenizer.ggml.{key} must hold {n} numbers, one per token")
    # llama.cpp renames empty pieces so that every piece is a unique, non-empty key.
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    scores = [float(s) for s in _get(md, "scores", None) or [0.0] * n]
    types = _get(md, "token_type", None) or [1] * n
    attrs = [_TYPE_TO_ATTR.get(int(t), UNDEFINED) for t in types]
    token_to_id: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if t in token_to_id:
            raise UnsupportedTokenizer(f"duplicate token in vocabulary: {t!r} has ids {token_to_id[t]} and {i}")
        token_to_id[t] = i

    if model == "llama":
        defaults = {"bos": 1, "eos": 2, "unk": 0, "pad": None}
        add_bos, add_eos, add_space_prefix = True, False, True
    else:
        defaults = {"bos": 11, "eos": 11, "unk": None, "pad": None}
        # The pre-tokenizer decides BPE's add_bos default (llama3 adds BOS); this
        # also rejects an unknown pre-tokenizer before any other work.
        add_bos = pre_config(_get(md, "pre") or "default").add_bos
        add_eos, add_space_prefix = False, False

    def special(name: str, key: str) -> int | None:
        value = _get(md, key, None)
        if value is not None and 0 <= int(value) < n:
            return int(value)
        default = defaults.get(name)
        return default if default is not None and default < n else None

    bos_id = special("bos", "bos_token_id")
    eos_id = special("eos", "eos_token_id")
    unk_id = special("unk", "unknown_token_id")
    pad_id = special("pad", "padding_token_id")
    eot_id = special("eot", "eot_token_id")
    eom_id = special("eom", "eom_token_id")
    add_bos = bool(_get(md, "add_bos_token", add_bos))
    add_eos = bool(_get(md, "add_eos_token", add_eos))
    add_space_prefix = bool(_get(md, "add_space_prefix", add_space_prefix))
    if add_bos and bos_id is None:
        raise UnsupportedTokenizer("add_bos_token is true, but bos_token_id is not set")

    def promote(token_id: int) -> None:
        attrs[token_id] |= CONTROL

    def find_first(texts: tuple[str, ...]) -> int | None:
        for text in texts:
            if text in token_to_id:
                return token_to_id[text]
        return None

    # Detected by text only when the file does not name them; detected ones become control.
    if eot_id is None:
        eot_id = find_first(_EOT_TEXTS)
        if eot_id is not None:
            promote(eot_id)
    if eom_id is None:
        eom_id = find_first(_EOM_TEXTS)
        if eom_id is not None:
            promote(eom_id)
    fim = {}
    for kind, texts in _FIM_TEXTS.items():
        fim[kind] = special(kind, f"fim_{kind}_token_id")
        if fim[kind] is None:
            fim[kind] = find_first(texts)
            if fim[kind] is not None:
                promote(fim[kind])

    eog = {fim[k] for k in ("pad", "rep", "sep") if fim[k] is not None}
    for text in _EOG_TEXTS:
        token_id = token_to_id.get(text)
        if token_id is not None:
            eog.add(token_id)
            promote(token_id)
    eog.update(i for i in (eos_id, eot_id, eom_id) if i is not None)
    # Harmony-style vocabularies: <|end|> separates messages there, it does not stop.
    texts_in_eog = {tokens[i]: i for i in eog}
    if "<|end|>" in texts_in_eog and (
        ("<|return|>" in texts_in_eog and "<|call|>" in texts_in_eog)
        or ("<|calls|>" in texts_in_eog and "<|flush|>" in texts_in_eog)
    ):
        end_id = texts_in_eog["<|end|>"]
        eog.discard(end_id)
        attrs[end_id] = USER_DEFINED
    if "<|tool_response>" in texts_in_eog and "</s>" in texts_in_eog:
        s_id = texts_in_eog["</s>"]
        eog.discard(s_id)
        attrs[s_id] = NORMAL

    return Vocab(
        model=model, pre=_get(md, "pre") or "default", tokens=tokens, scores=scores, attrs=attrs,
        token_to_id=token_to_id, bos_id=bos_id, eos_id=eos_id, eot_id=eot_id, unk_id=unk_id,
        pad_id=pad_id, add_bos=add_bos, add_eos=add_eos, add_space_prefix=add_space_prefix,
        eog_ids=frozenset(eog),
    )
