"""Model hyper-parameters, read from GGUF metadata in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import GGUFError
from ..gguf import GGUFFile
from ..gguf.quote import quote, quote_value


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int  # key/query width per head
    head_dim_v: int  # value width per head
    n_ff: int
    n_ctx_train: int
    vocab_size: int
    rms_eps: float
    rope_base: float
    rope_base_swa: float  # base for sliding-window layers (gemma3); equal to rope_base elsewhere
    rope_dim: int  # leading part of each head that is rotated
    rope_neox: bool  # True: pairs (i, i + d/2); False: adjacent pairs (2i, 2i + 1)
    rope_scale: float  # linear position scaling (positions are divided by it)
    sliding_window: int  # 0 = no sliding-window layers
    swa_period: int  # layer il slides unless il % swa_period == swa_period - 1 (0 = never)
    query_scale: float
    embed_scale: float  # gemma scales embeddings by sqrt(n_embd)
    final_softcap: float  # 0 = off
    attn_softcap: float  # 0 = off

    def layer_slides(self, il: int) -> bool:
        return self.sliding_window > 0 and self.swa_period > 0 and il % self.swa_period != self.swa_period - 1


# Required keys, as in llama.cpp's loader for llama, qwen2 and gemma3: block_count,
# context_length, embedding_length, layer_norm_rms_epsilon and (gemma3)
# sliding_window; also head_count and feed_forward_length, which our tensor
# shapes depend on. Every other key has a real default. Values are checked for
# type and range, and a key damaged by a flipped byte is refused (_damaged_twin).
MAX_INT = 1 << 24
MIN_ROPE_SCALE = 1e-6  # positions are divided by the factor
# Frequencies are base^(-2i/d): a base at or below 1 makes them grow with i, which
# no model does, and a tiny one overflows float32.
MIN_ROPE_BASE = 1.0


def _damaged_twin(g: GGUFFile, key: str) -> str | None:
    """A key in the file that differs from `key` in exactly one character: the
    likely remains of `key` after a flipped byte."""
    for k in g.metadata:
        if len(k) == len(key) and sum(a != b for a, b in zip(k, key)) == 1:
            return k
    return None


def _get(g: GGUFFile, key: str, default=None, required=True):
    if key in g.metadata:
        return g.metadata[key]
    twin = _damaged_twin(g, key)
    if twin is not None:
        # a flipped byte in a key name must not silently swap the value for a default
        raise GGUFError(f"metadata key {key!r} is missing but the file has {quote(twin)}, "
                        f"one character off: the key looks corrupted")
    if required and default is None:
        raise GGUFError(f"missing required metadata key {key!r}")
    return default


def _uniform(key: str, v):
    """Per-layer arrays are accepted when every layer has the same value."""
    if not isinstance(v, list):
        return v
    if not v or any(type(x) is not type(v[0]) or x != v[0] for x in v):
        raise GGUFError(f"metadata {key!r}: per-layer values {quote_value(v)} are not supported")
    return v[0]


def _positive_int(g: GGUFFile, key: str, default=None, required=True) -> int:
    v = _uniform(key, _get(g, key, default, required))
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v > MAX_INT:
        raise GGUFError(f"metadata {key!r} must be a positive integer up to {MAX_INT}, got {quote_value(v)}")
    return v


def _float(g: GGUFFile, key: str, default=None, required=True, *, low: float = 0.0, high: float = math.inf,
           allow_low: bool = False) -> float:
    """A finite float key above low (at least low, with allow_low) and below high.

    GGUF writers store these as float32; an integer, string or bool where a float
    belongs is refused as llama.cpp refuses a key of the wrong type."""
    v = _uniform(key, _get(g, key, default, required))
    if not isinstance(v, float):
        raise GGUFError(f"metadata {key!r} must be a float, got {quote_value(v)}")
    above = v >= low if allow_low else v > low
    if not (math.isfinite(v) and above and v < high):
        bounds = f"{'>=' if allow_low else '>'} {low:g}" + (f" and < {high:g}" if high != math.inf else "")
        raise GGUFError(f"metadata {key!r} must be finite and {bounds}, got {v!r}")
    return v


def _string(g: GGUFFile, key: str, default: str) -> str:
    v = _get(g, key, default, required=False)
    if not isinstance(v, str):
        raise GGUFError(f"metadata {key!r} must be a string, got {quote_value(v)}")
    return v


def _rope_scale(g: GGUFFile, a: str) -> float:
    """Linear position scaling, as llama.cpp reads it: the factor applies for type
    none or linear (the type only selects YaRN and the like, which we lack)."""
    scaling_type = _string(g, f"{a}.rope.scaling.type", "linear")
    if scaling_type not in ("none", "linear"):
        raise GGUFError(f"rope scaling type {quote(scaling_type)} is not supported (supported: none, linear)")
    key = f"{a}.rope.scaling.factor"
    if key not in g.metadata and f"{a}.rope.scale_linear" in g.metadata:
        key = f"{a}.rope.scale_linear"  # the older name llama.cpp still reads
    factor = _float(g, key, 0.0, required=False, allow_low=True)
    if 0 < factor < MIN_ROPE_SCALE:
        raise GGUFError(f"metadata {key!r} must be 0 (off) or at least {MIN_ROPE_SCALE:g}, got {factor!r}")
    return factor or 1.0  # 0 means "not scaled" in llama.cpp


def config_from_gguf(g: GGUFFile, rope_neox: bool, gemma_style: bool = False) -> ModelConfig:
    """Build the config for a llama-like architecture; the error names any missing or invalid key."""
    a = g.architecture
    n_embd = _positive_int(g, f"{a}.embedding_length")
    n_head = _positive_int(g, f"{a}.attention.head_count")
    n_head_kv = _positive_int(g, f"{a}.attention.head_count_kv", n_head)
    if n_head % n_head_kv:
        raise GGUFError(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    if _get(g, f"{a}.attention.key_length", required=False) is None and n_embd % n_head:
        raise GGUFError(f"embedding_length {n_embd} is not a multiple of head_count {n_head} "
                        f"and the file gives no attention.key_length")
    head_dim = _positive_int(g, f"{a}.attention.key_length", n_embd // n_head)
    head_dim_v = _positive_int(g, f"{a}.attention.value_length", head_dim)
    emb = g.tensors.get("token_embd.weight")
    if emb is None:
        raise GGUFError("missing required tensor 'token_embd.weight'")
    vocab = emb.dims[1] if len(emb.dims) > 1 else 0
    if f"{a}.vocab_size" in g.metadata:
        n_vocab = _positive_int(g, f"{a}.vocab_size")
        if n_vocab != vocab:
            raise GGUFError(f"metadata {a}.vocab_size is {n_vocab} but token_embd.weight has {vocab} rows")
    rope_dim = _positive_int(g, f"{a}.rope.dimension_count", head_dim)
    if rope_dim > head_dim or rope_dim % 2:
        # the RoPE kernel indexes up to rope_dim within each head: it must fit
        raise GGUFError(f"rope.dimension_count {rope_dim} must be even and at most the head size {head_dim}")
    if a == "llama" and rope_dim != head_dim:
        raise GGUFError(f"rope.dimension_count {rope_dim} must equal the head size {head_dim} for llama")
    rope_base = _float(g, f"{a}.rope.freq_base", 10000.0, required=False, low=MIN_ROPE_BASE)
    # gemma3's sliding layers use their own base, 10000 when the file does not say
    rope_base_swa = (_float(g, f"{a}.rope.freq_base_swa", 10000.0, required=False, low=MIN_ROPE_BASE)
                     if gemma_style else rope_base)
    # gemma3 requires its window, as llama.cpp does
    window = _positive_int(g, f"{a}.attention.sliding_window") if gemma_style else 0
    return ModelConfig(
        arch=a,
        n_layer=_positive_int(g, f"{a}.block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        n_ff=_positive_int(g, f"{a}.feed_forward_length"),
        n_ctx_train=_positive_int(g, f"{a}.context_length"),
        vocab_size=vocab,
        rms_eps=_float(g, f"{a}.attention.layer_norm_rms_epsilon", high=1.0),
        rope_base=rope_base,
        rope_base_swa=rope_base_swa,
        rope_dim=rope_dim,
        rope_neox=rope_neox,
        rope_scale=_rope_scale(g, a),
        sliding_window=window,
        swa_period=6 if window else 0,
        query_scale=1.0 / math.sqrt(head_dim),
        embed_scale=math.sqrt(n_embd) if gemma_style else 1.0,
        final_softcap=_float(g, f"{a}.final_logit_softcapping", 0.0, required=False, allow_low=True),
        attn_softcap=(_float(g, f"{a}.attn_logit_softcapping", 0.0, required=False, allow_low=True)
                      if not gemma_style else 0.0),
    )
