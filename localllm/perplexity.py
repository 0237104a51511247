"""Perplexity exactly as llama.cpp's llama-perplexity computes it.

Tokenize the whole text (with the model's add-BOS setting), cut it into
floor(n_tokens / n_ctx) chunks, set each chunk's first token to BOS when the
model adds BOS, evaluate each chunk from an empty cache, and score the logits
at positions n_ctx/2 .. n_ctx-2, each predicting the next token of the chunk.
PPL = exp(mean negative log-likelihood).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import UsageError


def chunk_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of targets (R,) under logits (R, vocab), in float64."""
    x = logits.astype(np.float64)
    mx = x.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(x - mx).sum(axis=1))
    return lse - x[np.arange(len(targets)), targets]


def perplexity(llm, text: str, n_ctx: int = 512, progress=None) -> float:
    if n_ctx < 8:
        raise UsageError(f"perplexity needs n_ctx >= 8, got {n_ctx}")
    tok = llm.tokenizer
    ids = np.array(tok.encode(text, add_bos=tok.add_bos), dtype=np.int64)
    n_chunks = len(ids) // n_ctx
    if n_chunks == 0:
        raise UsageError(f"the text has {len(ids)} tokens, fewer than one chunk of n_ctx {n_ctx}")
    if n_ctx > llm.n_ctx:
        raise UsageError(f"n_ctx {n_ctx} exceeds the model context this LLM was opened with ({llm.n_ctx})")
    first = n_ctx // 2
    total_nll, count = 0.0, 0
    session = llm.session
    for c in range(n_chunks):
        chunk = ids[c * n_ctx : (c + 1) * n_ctx].copy()
        if tok.add_bos:
            chunk[0] = tok.bos_id
        session.cache.clear()
        logits = session.feed(chunk.tolist(), logits_rows=list(range(first, n_ctx - 1)))
        nll = chunk_nll(logits, chunk[first + 1 :])
        total_nll += float(nll.sum())
        count += len(nll)
        if progress:
            progress("chunks", c + 1, n_chunks)
    session.cache.clear()
    return math.exp(total_nll / count)
