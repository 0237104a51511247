"""Runs a scheduler step on the model: one flattened batch, logits for the rows that sample.

The step's chunks (decode tokens, prefill chunks) become one batch: row t has
its token, position, sequence index and cache slot, and each sequence its
block table in the shared pool. The forward pass gives every row the arithmetic
it would get alone, so what shares a step never changes a request's logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..kv_cache import KVPool
from ..models.forward_pass import key_splits


class ModelRunner:
    """The model and the KV pool the block manager's block ids point into."""

    def __init__(self, model, pool: KVPool, threads: int):
        self.model, self.pool, self.threads = model, pool, threads

    def execute(self, chunks: Sequence, copies: Sequence[tuple[int, int]] = ()) -> dict[str, np.ndarray]:
        """Compute the chunks (a scheduler step's, or a draft model's); return {request_id:
        (rows, vocab) logits} for chunks with logit rows: their last num_logit_rows rows (one
        for a plain sample, one per draft token plus one when the chunk speculates).

        A chunk has request_id, start, end, token_ids, block_table and num_logit_rows.
        copies are the copy-on-write block copies to make before anything is written."""
        for src, dst in copies:
            self.pool.copy_block(src, dst)
        T = sum(len(c.token_ids) for c in chunks)
        bs = self.pool.block_size
        tokens = np.empty(T, np.int64)  # (T,)
        positions = np.empty(T, np.int32)  # (T,)
        seq = np.empty(T, np.int32)  # (T,) row -> its chunk's block table
        slots = np.empty(T, np.int64)  # (T,) where each row's key and value go
        tables = np.zeros((len(chunks), max(len(c.block_table) for c in chunks)), np.int32)  # (S, max_blocks)
        logit_rows, sampling = [], []  # sampling: (request id, how many rows it owns)
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
            m = c.num_logit_rows
            if m:
                logit_rows.extend(range(r + n - m, r + n))
                sampling.append((c.request_id, m))
            r += n
        n_split = key_splits(T, int(positions[0]), self.model.cfg.n_head_kv, self.threads)
        logits = self.model.run_batch(tokens, positions, seq, tables, slots, np.array(logit_rows, np.int64),
                                      self.pool, n_split)  # (R, vocab)
        out, j = {}, 0
        for rid, m in sampling:
            out[rid] = logits[j : j + m]  # (m, vocab)
            j += m
        return out
