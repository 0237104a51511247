"""A plain numpy forward pass for llama, gemma3 and qwen2: the hand-checkable definition.

Independent of localllm on purpose: the file is read with gguf.GGUFReader, weights are
dequantized with gguf.quants.dequantize, and everything runs in float64 with the full
T x T score matrix and an explicit mask. Slow and simple; only for tiny test models.
"""

from __future__ import annotations

import math

import gguf
import numpy as np


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, positions: np.ndarray, base: float, neox: bool) -> np.ndarray:
    """Rotate each pair of x (T, H, d) by theta_i = pos * base^(-2i/d).

    normal: pairs (2i, 2i+1); neox: pairs (i, i + d/2).
    """
    d = x.shape[-1]
    i = np.arange(d // 2)
    theta = positions[:, None] * base ** (-2.0 * i / d)  # (T, d/2)
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]  # (T, 1, d/2)
    a, b = (i, i + d // 2) if neox else (2 * i, 2 * i + 1)
    out = x.copy()
    out[..., a] = x[..., a] * cos - x[..., b] * sin
    out[..., b] = x[..., a] * sin + x[..., b] * cos
    return out


def causal_mask(T: int, window: int = 0) -> np.ndarray:
    """(T, T) bool, True where query p may see key j: j <= p, and p - j < window if window > 0."""
    p = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    visible = j <= p
    if window > 0:
        visible &= p - j < window
    return visible


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """q (T, H, d), k/v (T, G, d); query head h uses KV head h // (H/G). Returns (T, H, d)."""
    H, G = q.shape[1], k.shape[1]
    out = np.empty((q.shape[0], H, v.shape[2]))
    for h in range(H):
        g = h // (H // G)
        s = q[:, h] @ k[:, g].T  # (T, T) scores, q already scaled
        s = np.where(mask, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h] = p @ v[:, g]
    return out


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    """llama.cpp's GELU: a table over f16 inputs holding f16 results; identity / zero past |x| >= 10."""
    f16 = lambda a: np.asarray(a).astype(np.float16).astype(np.float64)
    xh = f16(x)
    y = f16(0.5 * xh * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (xh + 0.044715 * xh**3))))
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, y))


class ReferenceModel:
    def __init__(self, path):
        r = gguf.GGUFReader(str(path))
        self.meta = {k: f.contents() for k, f in r.fields.items()}
        self.arch = a = self.meta["general.architecture"]
        if a not in ("llama", "gemma3", "qwen2"):
            raise ValueError(f"reference has no {a!r}")
        # dequantize gives (rows, cols) in numpy order, i.e. (out_features, in_features)
        self.w = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64) for t in r.tensors}
        m = self.meta
        self.n_layer = m[f"{a}.block_count"]
        self.n_embd = m[f"{a}.embedding_length"]
        self.n_head = m[f"{a}.attention.head_count"]
        self.n_head_kv = m.get(f"{a}.attention.head_count_kv", self.n_head)
        self.head_dim = m.get(f"{a}.attention.key_length", self.n_embd // self.n_head)
        self.eps = m[f"{a}.attention.layer_norm_rms_epsilon"]
        self.base = m.get(f"{a}.rope.freq_base", 10000.0)
        self.gemma = a == "gemma3"
        self.window = m.get(f"{a}.attention.sliding_window", 0) if self.gemma else 0
        self.base_swa = m.get(f"{a}.rope.freq_base_swa", 10000.0)
        self.neox = a in ("gemma3", "qwen2")
        for unsupported in ("rope.scaling.type", "final_logit_softcapping", "attn_logit_softcapping"):
            assert f"{a}.{unsupported}" not in m, f"reference does not implement {unsupported}"
        assert "rope_freqs.weight" not in self.w, "reference does not implement rope_freqs"
        assert m.get(f"{a}.rope.dimension_count", self.head_dim) == self.head_dim, "reference rotates whole heads"

    def slides(self, il: int) -> bool:
        return self.window > 0 and il % 6 != 5

    def forward(self, tokens) -> np.ndarray:
        """Logits (T, vocab) float64 for every position of tokens, from position 0."""
        w, H, G, d = self.w, self.n_head, self.n_head_kv, self.head_dim
        tokens = np.asarray(tokens)
        T = len(tokens)
        pos = np.arange(T, dtype=np.float64)
        x = w["token_embd.weight"][tokens]  # (T, D)
        if self.gemma:
            x = x * math.sqrt(self.n_embd)
        for il in range(self.n_layer):
            p = f"blk.{il}."
            h = rmsnorm(x, w[p + "attn_norm.weight"], self.eps)  # (T, D)
            q = h @ w[p + "attn_q.weight"].T  # (T, H*d)
            k = h @ w[p + "attn_k.weight"].T  # (T, G*d)
            v = h @ w[p + "attn_v.weight"].T  # (T, G*d)
            if self.arch == "qwen2":
                q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
            q, k, v = q.reshape(T, H, d), k.reshape(T, G, d), v.reshape(T, G, d)
            if self.gemma:  # QK-norm over each head
                q = rmsnorm(q, w[p + "attn_q_norm.weight"], self.eps)
                k = rmsnorm(k, w[p + "attn_k_norm.weight"], self.eps)
            base = self.base_swa if self.slides(il) else self.base
            q = rope(q, pos, base, self.neox) / math.sqrt(d)
            k = rope(k, pos, base, self.neox)
            mask = causal_mask(T, self.window if self.slides(il) else 0)
            o = attention(q, k, v, mask).reshape(T, H * d) @ w[p + "attn_output.weight"].T  # (T, D)
            if self.gemma:
                o = rmsnorm(o, w[p + "post_attention_norm.weight"], self.eps)
            x = x + o
            h = rmsnorm(x, w[p + "ffn_norm.weight"], self.eps)
            act = gelu_tanh if self.gemma else silu
            f = act(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)  # (T, F)
            o = f @ w[p + "ffn_down.weight"].T  # (T, D)
            if self.gemma:
                o = rmsnorm(o, w[p + "post_ffw_norm.weight"], self.eps)
            x = x + o
        head = w.get("output.weight", w["token_embd.weight"])  # tied when there is no output.weight
        return rmsnorm(x, w["output_norm.weight"], self.eps) @ head.T  # (T, vocab)
