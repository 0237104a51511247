"""A preallocated, contiguous KV cache for one sequence.

Layout per layer: (n_kv_heads, n_ctx, head_dim), so one KV head's keys for a
run of positions are contiguous and the attention kernel streams them. Entries
are f16 bits (uint16) by default, half the memory of f32, as llama.cpp does.
"""

from __future__ import annotations

import numpy as np

from .errors import ContextOverflow
from .kernels.convert import store_kv


class KVCache:
    def __init__(self, n_layer: int, n_kv: int, n_ctx: int, dk: int, dv: int, dtype: str = "f16"):
        if dtype not in ("f16", "f32"):
            raise ValueError(f"KV cache dtype must be 'f16' or 'f32', not {dtype!r}")
        store = np.uint16 if dtype == "f16" else np.float32
        self.dtype = dtype
        self.n_ctx = n_ctx
        self.k = np.zeros((n_layer, n_kv, n_ctx, dk), dtype=store)  # (L, G, n_ctx, dk)
        self.v = np.zeros((n_layer, n_kv, n_ctx, dv), dtype=store)  # (L, G, n_ctx, dv)
        self.n_tokens = 0  # positions [0, n_tokens) hold valid entries
        self.tokens: list[int] = []  # the ids behind those entries, for prefix reuse

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def check_room(self, n_new: int) -> None:
        if self.n_tokens + n_new > self.n_ctx:
            raise ContextOverflow(
                f"context window full: {self.n_tokens} cached + {n_new} new tokens > n_ctx {self.n_ctx}"
            )

    def store(self, layer: int, k: np.ndarray, v: np.ndarray, start: int) -> None:
        """Write fresh keys/values (T, G, d) float32 at positions start .. start+T-1."""
        store_kv(self.k[layer], self.v[layer], k, v, start)

    def truncate(self, n: int) -> None:
        """Forget everything from position n on (chat edits, speculative rollback)."""
        if not 0 <= n <= self.n_tokens:
            raise ValueError(f"cannot truncate a cache of {self.n_tokens} tokens to {n}")
        self.n_tokens = n
        del self.tokens[n:]

    def clear(self) -> None:
        self.truncate(0)

    def common_prefix(self, ids) -> int:
        """How many leading ids are already cached (so only the rest needs prefill)."""
        n = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            n += 1
        return n
