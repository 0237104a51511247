"""The decoder-only transformer shared by the llama, gemma3 and qwen2 families.

Families differ in flags (`ArchSpec`), not in code paths of their own:
RoPE pairing, gemma's extra norms / QK-norm / sliding window / embedding scale,
the FFN activation and qwen2's QKV biases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GGUFError
from ..gguf import GGUFFile, TensorInfo
from ..kv_cache import KVCache, KVPool
from ..quant import SUPPORTED_TYPES, QuantTensor, dequantize
from .config import config_from_gguf
from .forward_pass import ForwardPlan
from .spec import ArchSpec
from .tensor_use import check_all_tensors_used


@dataclass
class Layer:
    attn_norm: np.ndarray  # (D,)
    wq: QuantTensor  # (H*dk, D)
    wk: QuantTensor  # (G*dk, D)
    wv: QuantTensor  # (G*dv, D)
    wo: QuantTensor  # (D, H*dv)
    ffn_norm: np.ndarray  # (D,)
    w_gate: QuantTensor  # (F, D)
    w_up: QuantTensor  # (F, D)
    w_down: QuantTensor  # (D, F)
    bq: np.ndarray | None = None  # (H*dk,)
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    q_norm: np.ndarray | None = None  # (dk,)
    k_norm: np.ndarray | None = None
    post_attn_norm: np.ndarray | None = None  # (D,)
    post_ffn_norm: np.ndarray | None = None


class _TensorPicker:
    """Fetches tensors by name, checking presence, shape and type with a clear error."""

    def __init__(self, g: GGUFFile):
        self.g = g

    def get(self, name: str, shape: tuple[int, ...], required: bool = True) -> TensorInfo | None:
        t = self.g.tensors.get(name)
        if t is None:
            if required:
                raise GGUFError(f"missing required tensor {name!r}")
            return None
        if t.shape != shape:
            raise GGUFError(f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
        return t

    def vector(self, name: str, n: int, required: bool = True) -> np.ndarray | None:
        t = self.get(name, (n,), required)
        if t is None:
            return None
        if t.qtype.name != "F32":
            return dequantize(t.raw(), t.qtype, (1, n)).reshape(n)
        return t.data  # zero-copy f32 view

    def matrix(self, name: str, n_out: int, n_in: int, required: bool = True) -> QuantTensor | None:
        t = self.get(name, (n_out, n_in), required)
        if t is None:
            return None
        if t.qtype not in SUPPORTED_TYPES:
            raise GGUFError(
                f"tensor {name!r} has type {t.qtype.name}, which localllm does not support "
                f"(supported: {', '.join(sorted(q.name for q in SUPPORTED_TYPES))})"
            )
        return QuantTensor(t.raw(), t.qtype, (n_out, n_in))


_LAST_ROW = np.zeros(1, np.int64)  # logits of row 0 of a one-token batch


class Transformer:
    """Weights as zero-copy views plus a forward pass over a KV cache."""

    def __init__(self, g: GGUFFile, spec: ArchSpec):
        self.spec = spec
        self.cfg = cfg = config_from_gguf(g, rope_neox=spec.rope_neox, gemma_style=spec.gemma_style)
        pick = _TensorPicker(g)
        D, H, G, dk, dv, F = cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.head_dim_v, cfg.n_ff
        self.tok_embd = pick.matrix("token_embd.weight", cfg.vocab_size, D)
        self.output = pick.matrix("output.weight", cfg.vocab_size, D, required=False) or self.tok_embd
        self.output_norm = pick.vector("output_norm.weight", D)
        ff = pick.vector("rope_freqs.weight", cfg.rope_dim // 2, required=False)
        self.freq_factors = np.ones(cfg.rope_dim // 2, np.float32) if ff is None else np.ascontiguousarray(ff)
        self.layers = []
        for il in range(cfg.n_layer):
            p = f"blk.{il}."
            gem = spec.gemma_style
            self.layers.append(Layer(
                attn_norm=pick.vector(p + "attn_norm.weight", D),
                wq=pick.matrix(p + "attn_q.weight", H * dk, D),
                wk=pick.matrix(p + "attn_k.weight", G * dk, D),
                wv=pick.matrix(p + "attn_v.weight", G * dv, D),
                wo=pick.matrix(p + "attn_output.weight", D, H * dv),
                ffn_norm=pick.vector(p + "ffn_norm.weight", D),
                w_gate=pick.matrix(p + "ffn_gate.weight", F, D),
                w_up=pick.matrix(p + "ffn_up.weight", F, D),
                w_down=pick.matrix(p + "ffn_down.weight", D, F),
                bq=pick.vector(p + "attn_q.bias", H * dk, required=spec.qkv_bias),
                bk=pick.vector(p + "attn_k.bias", G * dk, required=spec.qkv_bias),
                bv=pick.vector(p + "attn_v.bias", G * dv, required=spec.qkv_bias),
                q_norm=pick.vector(p + "attn_q_norm.weight", dk, required=gem),
                k_norm=pick.vector(p + "attn_k_norm.weight", dk, required=gem),
                post_attn_norm=pick.vector(p + "post_attention_norm.weight", D, required=gem),
                post_ffn_norm=pick.vector(p + "post_ffw_norm.weight", D, required=gem),
            ))
        check_all_tensors_used(g, spec.name)  # a tensor left over means metadata and file disagree
        self.plan = ForwardPlan(self, g.buffer)

    def new_cache(self, n_ctx: int, dtype: str = "f16") -> KVCache:
        """A single sequence's cache of n_ctx positions (a pool of its own)."""
        c = self.cfg
        return KVCache(c.n_layer, c.n_head_kv, n_ctx, c.head_dim, c.head_dim_v, dtype)

    def new_pool(self, n_blocks: int, dtype: str = "f16") -> KVPool:
        """A pool of n_blocks KV blocks that many sequences share through block tables."""
        c = self.cfg
        return KVPool(c.n_layer, c.n_head_kv, n_blocks, c.head_dim, c.head_dim_v, dtype)

    # ---- forward ------------------------------------------------------------

    def check_tokens(self, tokens) -> np.ndarray:
        """tokens as a 1-D int64 array; ValueError for anything else or ids outside the vocabulary."""
        arr = np.asarray(tokens)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"tokens must be a non-empty 1-D sequence of ids, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got {arr.dtype}")
        if arr.min() < 0 or arr.max() >= self.cfg.vocab_size:
            raise ValueError(f"token id out of range [0, {self.cfg.vocab_size})")
        return arr.astype(np.int64, copy=False)

    def forward(self, tokens, cache: KVCache, logits_rows=None, n_split: int = 1) -> np.ndarray:
        """Feed tokens at positions cache.n_tokens.. and return logits for the asked rows.

        tokens: (T,) ids; logits_rows: indices into tokens (default: the last one).
        Returns float32 (len(logits_rows), vocab). Rows nobody asked for never reach
        the LM head, the largest matmul for big vocabularies.
        """
        tokens = self.check_tokens(tokens)
        T = len(tokens)
        cache.check_room(T)
        rows = np.array([T - 1] if logits_rows is None else logits_rows, np.int64)  # (R,)
        logits = self._run_sequence(tokens, cache, rows, n_split)
        cache.appended(tokens)
        return logits

    def decode_one(self, token: int, cache: KVCache, n_split: int = 1) -> np.ndarray:
        """forward([token]) for a decode step, returning (vocab,) logits, with only the checks
        a single id needs."""
        if not 0 <= token < self.cfg.vocab_size:
            raise ValueError(f"token id out of range [0, {self.cfg.vocab_size})")
        cache.check_room(1)
        logits = self._run_sequence(np.array([token], np.int64), cache, _LAST_ROW, n_split)
        cache.appended((token,))
        return logits[0]

    def _run_sequence(self, tokens: np.ndarray, cache: KVCache, rows: np.ndarray, n_split: int) -> np.ndarray:
        """One sequence's batch over its own cache: the identity table, so slot = position."""
        start = cache.n_tokens
        positions = np.arange(start, start + len(tokens), dtype=np.int32)  # (T,)
        return self.run_batch(tokens, positions, np.zeros(len(tokens), np.int32), cache.table[None, :],
                              positions.astype(np.int64), rows, cache.pool, n_split)

    def run_batch(self, tokens, positions, seq, tables, slots, logit_rows, pool: KVPool,
                  n_split: int = 1) -> np.ndarray:
        """The forward pass over a flattened batch (see forward_pass.ForwardPlan.run);
        returns the softcapped logits (R, vocab) of the rows logit_rows."""
        return self._softcapped(self.plan.run(tokens, positions, seq, tables, slots, logit_rows, pool, n_split))

    def _softcapped(self, logits: np.ndarray) -> np.ndarray:
        cap = self.cfg.final_softcap
        return np.tanh(logits / cap) * cap if cap > 0 else logits
