"""The decoder-only transformer shared by the llama, gemma3 and qwen2 families.

Families differ in flags (`ArchSpec`), not in code paths of their own:
RoPE pairing, gemma's extra norms / QK-norm / sliding window / embedding scale,
the FFN activation and qwen2's QKV biases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numba
import numpy as np

from ..errors import GGUFError
from ..gguf import GGUFFile, TensorInfo
from ..kernels.activations import gated_activation
from ..kernels.attention import attention
from ..kernels.norms import rmsnorm
from ..kernels.rope import rope
from ..kv_cache import KVCache
from ..quant import SUPPORTED_TYPES, QuantTensor, dequantize, linear, linear_many
from .config import config_from_gguf
from .decode_step import DecodePlan
from .spec import ArchSpec


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
        # Single tokens go through one compiled call for all layers when the kernels allow;
        # LOCALLLM_DECODE_STEP=0 keeps them on the Python layer loop (for A/B checks).
        use_plan = os.environ.get("LOCALLLM_DECODE_STEP", "1") not in ("0", "false", "no")
        self.decode_plan = DecodePlan(self, g.buffer) if use_plan and DecodePlan.supports(self) else None

    # ---- pieces -------------------------------------------------------------

    def new_cache(self, n_ctx: int, dtype: str = "f16") -> KVCache:
        c = self.cfg
        return KVCache(c.n_layer, c.n_head_kv, n_ctx, c.head_dim, c.head_dim_v, dtype)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """(T,) ids -> (T, D) float32 rows of the embedding, scaled as the family requires."""
        rows = self.tok_embd.raw[tokens]  # (T, row_bytes): copies only these rows
        x = dequantize(rows, self.tok_embd.qtype, (len(tokens), self.cfg.n_embd))
        if self.cfg.embed_scale != 1.0:
            x *= np.float32(self.cfg.embed_scale)
        return x

    def _attention_block(self, L: Layer, il: int, x: np.ndarray, positions: np.ndarray,
                         cache: KVCache, start: int, n_split: int) -> np.ndarray:
        c = self.cfg
        T = x.shape[0]
        h = rmsnorm(x, L.attn_norm, c.rms_eps)  # (T, D)
        q, k, v = linear_many(h, (L.wq, L.wk, L.wv))  # (T, H*dk), (T, G*dk), (T, G*dv)
        if L.bq is not None:
            q += L.bq
            k += L.bk
            v += L.bv
        q = q.reshape(T, c.n_head, c.head_dim)
        k = k.reshape(T, c.n_head_kv, c.head_dim)
        v = v.reshape(T, c.n_head_kv, c.head_dim_v)
        if L.q_norm is not None:
            q = rmsnorm(q, L.q_norm, c.rms_eps)
            k = rmsnorm(k, L.k_norm, c.rms_eps)
        slides = c.layer_slides(il)
        base = c.rope_base_swa if slides else c.rope_base
        rope(q, k, positions, base, c.rope_dim, c.rope_neox, c.rope_scale, self.freq_factors)
        q *= np.float32(c.query_scale)
        cache.store(il, k, v, start)
        o = attention(q, cache.k[il], cache.v[il], positions, c.sliding_window if slides else 0,
                      n_split, c.attn_softcap)  # (T, H, dv)
        o = linear(o.reshape(T, c.n_head * c.head_dim_v), L.wo)  # (T, D)
        if L.post_attn_norm is not None:
            o = rmsnorm(o, L.post_attn_norm, c.rms_eps)
        return o

    def _ffn_block(self, L: Layer, x: np.ndarray) -> np.ndarray:
        c = self.cfg
        h = rmsnorm(x, L.ffn_norm, c.rms_eps)  # (T, D)
        gate, up = linear_many(h, (L.w_gate, L.w_up))  # (T, F) each
        a = gated_activation(gate, up, self.spec.activation)  # (T, F)
        o = linear(a, L.w_down)  # (T, D)
        if L.post_ffn_norm is not None:
            o = rmsnorm(o, L.post_ffn_norm, c.rms_eps)
        return o

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
        start = cache.n_tokens
        rows = [T - 1] if logits_rows is None else logits_rows
        if T == 1 and self.decode_plan is not None and len(rows) == 1:
            return self._planned_step(int(tokens[0]), cache, n_split)[None, :]
        positions = np.arange(start, start + T, dtype=np.int32)
        x = self.embed(tokens)  # (T, D)
        for il, L in enumerate(self.layers):
            x += self._attention_block(L, il, x, positions, cache, start, n_split)
            x += self._ffn_block(L, x)
        cache.n_tokens += T
        cache.tokens.extend(int(t) for t in tokens)
        return self.logits_of(x[rows])

    def decode_one(self, token: int, cache: KVCache, n_split: int = 1) -> np.ndarray:
        """forward([token]) for a decode step, returning (vocab,) logits: the compiled
        step when the model has one, with only the checks a single id needs."""
        if self.decode_plan is None:
            return self.forward([token], cache, n_split=n_split)[0]
        if not 0 <= token < self.cfg.vocab_size:
            raise ValueError(f"token id out of range [0, {self.cfg.vocab_size})")
        cache.check_room(1)
        return self._planned_step(token, cache, n_split)

    def _planned_step(self, token: int, cache: KVCache, n_split: int) -> np.ndarray:
        """The compiled step for a checked id with room in the cache -> (vocab,) logits."""
        logits = self.decode_plan.step(token, cache, cache.n_tokens, n_split, numba.get_num_threads())
        cache.n_tokens += 1
        cache.tokens.append(token)
        return self._softcapped(logits[0])

    def logits_of(self, x: np.ndarray) -> np.ndarray:
        """Final norm and LM head for hidden states x (R, D) -> (R, vocab)."""
        c = self.cfg
        h = rmsnorm(np.ascontiguousarray(x), self.output_norm, c.rms_eps)
        return self._softcapped(linear(h, self.output))

    def _softcapped(self, logits: np.ndarray) -> np.ndarray:
        cap = self.cfg.final_softcap
        return np.tanh(logits / cap) * cap if cap > 0 else logits
