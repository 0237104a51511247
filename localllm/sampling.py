"""Token sampling: a frozen params dataclass plus a per-request `Sampler`.

The chain follows llama.cpp's default order:

    logit bias -> penalties -> top-k -> top-p -> min-p -> temperature -> draw

so truncation is decided on the untempered distribution and temperature only
reshapes what survives. ``temperature == 0`` is greedy: bias and penalties
still apply, then argmax, and the RNG is never touched.

Each stage is also exposed as a pure numpy function over a full logits row
(removed tokens become ``-inf``). Those are the readable definitions the tests
check; `Sampler` computes the same result on a compact candidate set so that a
262k-token vocabulary costs one partition instead of a sort.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError

__all__ = [
    "SamplingParams",
    "Sampler",
    "InvalidSamplingParams",
    "apply_logit_bias",
    "apply_penalties",
    "apply_top_k",
    "apply_top_p",
    "apply_min_p",
    "apply_temperature",
    "softmax",
    "top_k_indices",
    "draw",
]


class InvalidSamplingParams(UsageError, ValueError):
    """A sampling option is out of range (a usage error for the CLI, a ValueError for Python)."""


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass(frozen=True)
class SamplingParams:
    """What to sample and when to stop. Defaults are llama.cpp's.

    ``top_k <= 0``, ``top_p == 1`` and ``min_p == 0`` each disable their stage.
    ``penalty_last_n`` is how many trailing history tokens the penalties look
    at: 0 disables them, -1 means the whole history.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    # Excluded from the hash: a mapping is not hashable, and two params that
    # differ only in bias may share a hash bucket without harm.
    logit_bias: Mapping[int, float] | None = field(default=None, hash=False)

    def __post_init__(self):
        def bad(msg):
            raise InvalidSamplingParams(msg)

        def num(name):
            v = getattr(self, name)
            if not _is_num(v) or math.isnan(v):
                bad(f"{name} must be a number, got {v!r}")
            return float(v)

        t = num("temperature")
        if not (0.0 <= t < math.inf):
            bad(f"temperature must be >= 0 and finite, got {self.temperature!r}")
        if not _is_int(self.top_k):
            bad(f"top_k must be an integer (<= 0 disables it), got {self.top_k!r}")
        p = num("top_p")
        if not (0.0 < p <= 1.0):
            bad(f"top_p must be in (0, 1], got {self.top_p!r}")
        m = num("min_p")
        if not (0.0 <= m <= 1.0):
            bad(f"min_p must be in [0, 1], got {self.min_p!r}")
        r = num("repeat_penalty")
        if not (0.0 < r < math.inf):
            bad(f"repeat_penalty must be > 0 and finite (1 disables it), got {self.repeat_penalty!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not math.isfinite(num(name)):
                bad(f"{name} must be finite, got {getattr(self, name)!r}")
        if not _is_int(self.penalty_last_n) or self.penalty_last_n < -1:
            bad(f"penalty_last_n must be an integer >= -1 (-1 = whole history), got {self.penalty_last_n!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            bad(f"seed must be a non-negative integer or None, got {self.seed!r}")
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            bad(f"max_tokens must be a positive integer, got {self.max_tokens!r}")

        stop = self.stop
        if stop is None:
            stop = ()
        elif isinstance(stop, str):  # OpenAI allows a bare string
            stop = (stop,)
        else:
            stop = tuple(stop)
        for s in stop:
            if not isinstance(s, str) or not s:
                bad(f"stop strings must be non-empty strings, got {s!r}")
        object.__setattr__(self, "stop", stop)

        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, Mapping):
                bad(f"logit_bias must be a mapping of token id -> bias, got {type(self.logit_bias).__name__}")
            clean = {}
            for k, v in self.logit_bias.items():
                # JSON object keys arrive as strings ("50256": -100).
                try:
                    tok = int(k) if isinstance(k, str) else k
                except ValueError:
                    tok = None
                if not _is_int(tok) or tok < 0:
                    bad(f"logit_bias keys must be non-negative token ids, got {k!r}")
                if not _is_num(v) or math.isnan(v) or v == math.inf:
                    bad(f"logit_bias[{k!r}] must be a finite number or -inf, got {v!r}")
                clean[int(tok)] = float(v)
            object.__setattr__(self, "logit_bias", types.MappingProxyType(clean))


# ---------------------------------------------------------------- pure stages
# Each takes a 1-D logits row and returns a new float32 row; removed tokens are -inf.


def without_padding(logits: np.ndarray, n_valid: int) -> np.ndarray:
    """logits with the rows past the tokenizer's vocabulary banned: embeddings padded to a
    round size are never sampled. A copy only when there is padding."""
    if logits.shape[-1] <= n_valid:
        return logits
    logits = logits.copy()
    logits[n_valid:] = -np.inf
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    """float64 probabilities; -inf entries get exactly 0."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - np.max(x))
    return e / e.sum()


def apply_logit_bias(logits: np.ndarray, bias: Mapping[int, float] | None) -> np.ndarray:
    out = np.array(logits, dtype=np.float32, copy=True)
    if bias:
        ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        out[ids] += np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
    return out


def apply_penalties(
    logits: np.ndarray,
    history: Sequence[int],
    repeat_penalty: float = 1.0,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    last_n: int = 64,
) -> np.ndarray:
    """llama.cpp's penalties over the last ``last_n`` history tokens.

    For each token seen c > 0 times: a positive logit is divided by
    repeat_penalty and a non-positive one multiplied (so the penalty always
    lowers it), then ``c * frequency_penalty + presence_penalty`` is subtracted.
    """
    out = np.array(logits, dtype=np.float32, copy=True)
    if last_n == 0 or len(history) == 0:
        return out
    tail = np.asarray(history[-last_n:] if last_n > 0 else history, dtype=np.int64)
    ids, counts = np.unique(tail, return_counts=True)
    v = out[ids]
    if repeat_penalty != 1.0:
        v = np.where(v <= 0, v * repeat_penalty, v / repeat_penalty)
    v = v - (counts * frequency_penalty + presence_penalty)
    out[ids] = v.astype(np.float32)
    return out


def top_k_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of exactly k largest entries (unordered); ties at the cut are broken by position.

    Runs once per generated token over up to 262k logits, so it avoids a
    full-row partition. Split the row into C >= k disjoint groups (strided, so
    the max is one fast pass down the columns): the group maxima are C
    distinct entries, so the k-th largest of them cannot exceed the k-th
    largest logit, and everything below it can be dropped before the exact
    partition. On real logits that leaves ~k candidates.
    """
    x = np.asarray(logits)
    n = x.shape[0]
    if k <= 0 or k >= n:
        return np.arange(n)
    groups = min(4096, n // 8)
    cand = None
    if groups >= 2 * k:
        maxima = x[: (n // groups) * groups].reshape(-1, groups).max(axis=0)  # (groups,)
        lb = np.partition(maxima, groups - k)[groups - k]
        cand = np.flatnonzero(x >= lb)
        if cand.size < k:  # only with NaNs; fall back to the plain path
            cand = None
    if cand is None:
        cand = np.arange(n)
    if cand.size == k:
        return cand
    vals = x[cand]
    thr = np.partition(vals, vals.size - k)[vals.size - k]
    above = cand[vals > thr]  # at most k-1 of these: thr itself is in the top k
    at = cand[vals == thr][: k - above.size]
    return np.concatenate([above, at])


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits; k <= 0 or k >= vocab keeps everything."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.full_like(x, -np.inf)
    idx = top_k_indices(x, k)
    out[idx] = x[idx]
    return out


def _nucleus_size(sorted_probs: np.ndarray, p: float) -> int:
    """Length of the shortest descending prefix whose mass reaches p (at least 1)."""
    cum = np.cumsum(sorted_probs)
    # Rounding can leave the total a hair under p; then everything is kept.
    return min(int(np.searchsorted(cum, p, side="left")) + 1, sorted_probs.size)


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most-probable tokens whose probability sums to >= p."""
    x = np.asarray(logits, dtype=np.float32)
    if p >= 1.0:
        return x.copy()
    order = np.argsort(-x, kind="stable")
    keep = order[: _nucleus_size(softmax(x)[order], p)]
    out = np.full_like(x, -np.inf)
    out[keep] = x[keep]
    return out


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Keep tokens with p >= min_p * p_max, i.e. logit >= max_logit + log(min_p)."""
    x = np.asarray(logits, dtype=np.float32)
    if min_p <= 0.0:
        return x.copy()
    return np.where(x >= np.max(x) + math.log(min_p), x, np.float32(-np.inf)).astype(np.float32)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Divide by temperature (> 0); greedy (0) is handled by the sampler, not here."""
    if temperature <= 0:
        raise ValueError("apply_temperature needs temperature > 0; temperature 0 means argmax")
    return (np.asarray(logits, dtype=np.float32) / np.float32(temperature)).astype(np.float32)


# ---------------------------------------------------------------- sampler


class Sampler:
    """One request's sampler: the params plus its own seeded generator.

    Build it once per request so the same seed reproduces the same tokens no
    matter what else runs in the batch.
    """

    def __init__(self, params: SamplingParams, vocab_size: int, rng: np.random.Generator | None = None):
        """rng: the generator to draw from instead of one seeded with params.seed (a draft
        model's sampler must not share the request's stream)."""
        self.params = params
        self.vocab_size = int(vocab_size)
        self.rng = rng if rng is not None else np.random.default_rng(params.seed)
        bias = params.logit_bias or {}
        for tok in bias:
            if tok >= self.vocab_size:
                raise InvalidSamplingParams(f"logit_bias token id {tok} is outside the vocabulary (size {self.vocab_size})")
        self._bias = bias or None
        self._penalize = params.penalty_last_n != 0 and (
            params.repeat_penalty != 1.0 or params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        )

    def _adjusted(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Logits after bias and penalties; no copy when neither applies."""
        x = np.asarray(logits)
        if x.shape != (self.vocab_size,):
            raise ValueError(f"expected logits of shape ({self.vocab_size},), got {x.shape}")
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if self._bias:
            x = apply_logit_bias(x, self._bias)
        if self._penalize and len(history):
            p = self.params
            x = apply_penalties(x, history, p.repeat_penalty, p.presence_penalty, p.frequency_penalty, p.penalty_last_n)
        return x

    def _candidates(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and their logits that survive top-k, top-p and min-p, sorted by logit descending."""
        p = self.params
        n = x.shape[0]
        if 0 < p.top_k < n:
            ids = top_k_indices(x, p.top_k)
            vals = x[ids]
            order = np.argsort(-vals, kind="stable")
            ids, vals = ids[order], vals[order]
            if p.top_p < 1.0:
                cut = _nucleus_size(softmax(vals), p.top_p)
                ids, vals = ids[:cut], vals[:cut]
        elif p.min_p > 0.0:
            # No top-k: min-p's survivors are a prefix of the sorted order, as
            # is the nucleus, so only the min-p set needs sorting; top-p still
            # sees the full distribution through its normalizer.
            m = float(np.max(x))
            ids = np.flatnonzero(x >= m + math.log(p.min_p))
            vals = x[ids]
            order = np.argsort(-vals, kind="stable")
            ids, vals = ids[order], vals[order]
            if p.top_p < 1.0:
                z = np.sum(np.exp(x - m), dtype=np.float64)
                pr = np.exp(vals.astype(np.float64) - m) / z
                cut = _nucleus_size(pr, p.top_p)
                ids, vals = ids[:cut], vals[:cut]
            return ids, vals
        elif p.top_p < 1.0:
            ids, vals = self._full_nucleus(x, p.top_p)
        else:
            ids, vals = np.arange(n), x
        if p.min_p > 0.0:
            keep = vals >= vals.max() + math.log(p.min_p)
            ids, vals = ids[keep], vals[keep]
        return ids, vals

    @staticmethod
    def _full_nucleus(x: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
        """Top-p over the whole vocabulary without a full sort: grow a partition until it holds mass p."""
        n = x.shape[0]
        m = float(np.max(x))
        z = np.sum(np.exp(x - m), dtype=np.float64)
        k = 64
        while True:
            ids = top_k_indices(x, min(k, n))
            vals = x[ids]
            order = np.argsort(-vals, kind="stable")
            ids, vals = ids[order], vals[order]
            pr = np.exp(vals.astype(np.float64) - m) / z
            if k >= n or pr.sum() >= top_p:
                cut = _nucleus_size(pr, top_p)
                return ids[:cut], vals[:cut]
            k *= 4

    def distribution(self, logits: np.ndarray, history: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, float64 probabilities) that `sample` draws from, after the whole chain."""
        x = self._adjusted(logits, history)
        if self.params.temperature == 0.0:
            return np.array([int(np.argmax(x))]), np.ones(1)
        if not np.isfinite(np.max(x)):
            # -inf everywhere (bias banned every token) or NaN/inf from the model: nothing to draw from.
            raise ValueError("logits must be finite with at least one token not banned by logit_bias")
        ids, vals = self._candidates(x)
        return ids, softmax(vals.astype(np.float64) / self.params.temperature)

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """Pick the next token from one logits row (float32, (vocab,))."""
        if self.params.temperature == 0.0:
            return int(np.argmax(self._adjusted(logits, history)))
        ids, probs = self.distribution(logits, history)
        return draw(ids, probs, self.rng)


def draw(ids: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> int:
    """One of ids with probability proportional to weights (>= 0, not all 0). An inverse-CDF
    draw: one uniform per token keeps seeded streams simple."""
    cum = np.cumsum(weights)
    j = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return int(ids[min(j, ids.size - 1)])
