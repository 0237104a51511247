"""Runs a scheduler step on the model: one flattened batch, logits for the rows that sample.

The step's chunks (decode tokens, prefill chunks) become one batch: row t has
its token, position, sequence index and cache slot, and each sequence its
block table in the shared pool. The forward pass gives every row the arithmetic
it would get alone, so what shares a step never changes a request's logits.
"""

from __future__ import annotations

import numpy as np

from ..kv_cache import KVPool
from .scheduler import SchedulerStep

# Decode with one query row spreads its keys over threads only with enough of them.
SPLIT_MIN_KEYS = 256


def key_splits(n_rows: int, n_cached: int, kv_heads: int, threads: int) -> int:
    """Key chunks per KV head for attention. A single query row's work items are its KV heads;
    only when there are fewer of them than threads (and enough keys) are a head's keys split.
    Measured on 2 cores: splitting SmolLM2's 3 KV heads made decode 4-15% slower at 300-2000
    cached tokens, so it is not done there. The split changes no bit of the result."""
    if n_rows == 1 and n_cached >= SPLIT_MIN_KEYS and kv_heads < threads:
        return max(1, threads // kv_heads)
    return 1


class ModelRunner:
    """The model and the KV pool the block manager's block ids point into."""

    def __init__(self, model, pool: KVPool, threads: int):
        self.model, self.pool, self.threads = model, pool, threads

    def execute(self, step: SchedulerStep) -> dict[str, np.ndarray]:
        """Compute the step's chunks; return {request_id: (vocab,) logits} for chunks that sample."""
        for src, dst in step.copies:  # copy-on-write before anything writes the new blocks
            self.pool.copy_block(src, dst)
        chunks = step.chunks
        T = step.num_tokens
        bs = self.pool.block_size
        tokens = np.empty(T, np.int64)  # (T,)
        positions = np.empty(T, np.int32)  # (T,)
        seq = np.empty(T, np.int32)  # (T,) row -> its chunk's block table
        slots = np.empty(T, np.int64)  # (T,) where each row's key and value go
        tables = np.zeros((len(chunks), max(len(c.block_table) for c in chunks)), np.int32)  # (S, max_blocks)
        logit_rows, sampling = [], []
        r = 0
        for i, c in enumerate(chunks):
            n = len(c.token_ids)
            table = np.asarray(c.block_table, np.int32)
            pos = np.arange(c.start, c.end, dtype=np.int32)  # (n,)
            tokens[r : r + n] = c.token_ids
            positions[r : r + n] = pos
            seq[r : r + n] = i
            slots[r : r + n] = table[pos // bs].astype(np.int64) * bs + pos % bs
            tables[i, : len(table)] = table
            if c.sample:
                logit_rows.append(r + n - 1)
                sampling.append(c.request.request_id)
            r += n
        n_split = key_splits(T, int(positions[0]), self.model.cfg.n_head_kv, self.threads)
        logits = self.model.run_batch(tokens, positions, seq, tables, slots, np.array(logit_rows, np.int64),
                                      self.pool, n_split)  # (R, vocab)
        return {rid: logits[j] for j, rid in enumerate(sampling)}
