"""Model hyper-parameters, read from GGUF metadata in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import GGUFError
from ..gguf import GGUFFile


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



def _get(g: GGUFFile, key: str, default=None, required=True):
    if key in g.metadata:
        return g.metadata[key]
    if required and default is None:
        raise GGUFError(f"missing required metadata key {key!r}")
    return default


def _positive_int(g: GGUFFile, key: str, default=None) -> int:
    v = _get(g, key, default)
    if isinstance(v, list):  # some files store per-layer values; we need them uniform
        if not v or len(set(v)) != 1:
            raise GGUFError(f"metadata {key!r}: per-layer values {v[:8]}... are not supported")
        v = v[0]
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v > 1 << 24:
        raise GGUFError(f"metadata {key!r} must be a positive integer, got {v!r}")
    return v


def config_from_gguf(g: GGUFFile, rope_neox: bool, gemma_style: bool = False) -> ModelConfig:
    """Build the config for a llama-like architecture; the error names any missing key."""
    a = g.architecture
    n_embd = _positive_int(g, f"{a}.embedding_length")
    n_head = _positive_int(g, f"{a}.attention.head_count")
    n_head_kv = _positive_int(g, f"{a}.attention.head_count_kv", n_head)
    if n_head % n_head_kv:
        raise GGUFError(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    head_dim = _positive_int(g, f"{a}.attention.key_length", n_embd // n_head)
    head_dim_v = _positive_int(g, f"{a}.attention.value_length", head_dim)
    emb = g.tensors.get("token_embd.weight")
    if emb is None:
        raise GGUFError("missing required tensor 'token_embd.weight'")
    vocab = emb.dims[1] if len(emb.dims) > 1 else 0
    rope_base = float(_get(g, f"{a}.rope.freq_base", 10000.0))
    scaling_type = _get(g, f"{a}.rope.scaling.type", "none", required=False)
    if scaling_type not in ("none", "linear"):
        raise GGUFError(f"rope scaling type {scaling_type!r} is not supported (supported: none, linear)")
    rope_scale = float(_get(g, f"{a}.rope.scaling.factor", 1.0, required=False)) if scaling_type == "linear" else 1.0
    rope_dim = _positive_int(g, f"{a}.rope.dimension_count", head_dim)
    if rope_dim > head_dim or rope_dim % 2:
        # the RoPE kernel indexes up to rope_dim within each head: it must fit
        raise GGUFError(f"rope.dimension_count {rope_dim} must be even and at most the head size {head_dim}")
    window = int(_get(g, f"{a}.attention.sliding_window", 0, required=False)) if gemma_style else 0
    return ModelConfig(
        arch=a,
        n_layer=_positive_int(g, f"{a}.block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        n_ff=_positive_int(g, f"{a}.feed_forward_length"),
        n_ctx_train=_positive_int(g, f"{a}.context_length", 2048),
        vocab_size=vocab,
        rms_eps=float(_get(g, f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=rope_base,
        # gemma3's sliding layers use their own base; 10000 when the file does not say.
        rope_base_swa=float(_get(g, f"{a}.rope.freq_base_swa", 10000.0)) if gemma_style else rope_base,
        rope_dim=rope_dim,
        rope_neox=rope_neox,
        rope_scale=rope_scale or 1.0,
        sliding_window=window,
        swa_period=6 if window else 0,
        query_scale=1.0 / math.sqrt(head_dim),
        embed_scale=math.sqrt(n_embd) if gemma_style else 1.0,
        final_softcap=float(_get(g, f"{a}.final_logit_softcapping", 0.0, required=False)),
        attn_softcap=float(_get(g, f"{a}.attn_logit_softcapping", 0.0, required=False)) if not gemma_style else 0.0,
    )
