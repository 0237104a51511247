"""The paged KV cache: one pool of fixed-size blocks, and one sequence's view of it.

`KVPool` holds every layer's keys and values in blocks of `block_size` token
positions: (L, n_blocks, n_kv_heads, block_size, head_dim), so one KV head's
keys for a block's positions are contiguous and the attention kernel streams
them. A sequence owns a block table: its position p lives in block
table[p // block_size] at offset p % block_size (PagedAttention). Entries are
f16 bits (uint16) by default, half the memory of f32, as llama.cpp does.

`KVCache` is a single sequence over a pool of its own with the identity table,
the cache a `Session` keeps across calls. The engine shares one pool between
many sequences through its block manager instead.
"""

from __future__ import annotations

import numpy as np

from .errors import ContextOverflow
from .memory import kv_allocation

BLOCK_SIZE = 32  # token positions per block; a power of two (the kernels shift and mask)
_ELEMENT = {"f16": np.uint16, "f32": np.float32}  # how a cache entry is stored


def block_bytes(n_layer: int, n_kv: int, dk: int, dv: int, dtype: str = "f16", block_size: int = BLOCK_SIZE) -> int:
    """Bytes of one KV block: keys and values of block_size positions in every layer."""
    return n_layer * n_kv * block_size * (dk + dv) * np.dtype(_ELEMENT[dtype]).itemsize


class KVPool:
    def __init__(self, n_layer: int, n_kv: int, n_blocks: int, dk: int, dv: int, dtype: str = "f16",
                 block_size: int = BLOCK_SIZE):
        if dtype not in _ELEMENT:
            raise ValueError(f"KV cache dtype must be 'f16' or 'f32', not {dtype!r}")
        if block_size < 1 or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two, not {block_size}")
        store = _ELEMENT[dtype]
        self.dtype, self.block_size, self.n_blocks = dtype, block_size, n_blocks
        needed = n_blocks * block_bytes(n_layer, n_kv, dk, dv, dtype, block_size)
        with kv_allocation(needed, n_blocks * block_size):
            self.k = np.zeros((n_layer, n_blocks, n_kv, block_size, dk), dtype=store)  # (L, NB, G, bs, dk)
            self.v = np.zeros((n_layer, n_blocks, n_kv, block_size, dv), dtype=store)  # (L, NB, G, bs, dv)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def copy_block(self, src: int, dst: int) -> None:
        """Copy-on-write: block dst gets src's keys and values in every layer."""
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]


def blocks_for(n_tokens: int, block_size: int = BLOCK_SIZE) -> int:
    return (n_tokens + block_size - 1) // block_size


class KVCache:
    """One sequence of up to n_ctx tokens, over a pool of its own (identity block table)."""

    def __init__(self, n_layer: int, n_kv: int, n_ctx: int, dk: int, dv: int, dtype: str = "f16"):
        n_blocks = blocks_for(n_ctx)
        self.pool = KVPool(n_layer, n_kv, n_blocks, dk, dv, dtype)
        self.dtype = dtype
        self.n_ctx = n_ctx
        self.table = np.arange(n_blocks, dtype=np.int32)  # (n_blocks,) position p -> block p // bs
        self.n_tokens = 0  # positions [0, n_tokens) hold valid entries
        self.tokens: list[int] = []  # the ids behind those entries

    @property
    def nbytes(self) -> int:
        return self.pool.nbytes

    def check_room(self, n_new: int) -> None:
        if self.n_tokens + n_new > self.n_ctx:
            raise ContextOverflow(
                f"context window full: {self.n_tokens} cached + {n_new} new tokens > n_ctx {self.n_ctx}"
            )

    def appended(self, tokens) -> None:
        """Record that tokens' keys and values were written at positions n_tokens.. on."""
        self.n_tokens += len(tokens)
        self.tokens.extend(int(t) for t in tokens)

    def truncate(self, n: int) -> None:
        """Forget everything from position n on."""
        if not 0 <= n <= self.n_tokens:
            raise ValueError(f"cannot truncate a cache of {self.n_tokens} tokens to {n}")
        self.n_tokens = n
        del self.tokens[n:]

    def clear(self) -> None:
        self.truncate(0)
