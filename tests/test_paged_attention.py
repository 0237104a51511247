"""Paged attention at the kernel level: where a sequence's blocks sit changes no bit, and
the split decode kernel repeats the unsplit arithmetic whatever a model's mask compiles in."""

from __future__ import annotations

import numpy as np
import pytest

from localllm.kernels.attention import attention
from localllm.kernels.convert import store_kv

BS = 32  # the pool's block size (kv_cache.BLOCK_SIZE)


def _pool(n_blocks, G, d, rng=None):
    shape = (n_blocks, G, BS, d)  # one layer of a KVPool, f16 bits
    return np.zeros(shape, np.uint16) if rng is None else rng.integers(0, 1 << 15, shape).astype(np.uint16)


def _filled(table, k, v, n_blocks, rng):
    """A pool holding k, v (P, G, d) at the positions of block table `table` (garbage elsewhere)."""
    kp, vp = _pool(n_blocks, k.shape[1], k.shape[2], rng), _pool(n_blocks, v.shape[1], v.shape[2], rng)
    pos = np.arange(k.shape[0])
    store_kv(kp, vp, k, v, (table[pos // BS].astype(np.int64) * BS + pos % BS))
    return kp, vp


@pytest.mark.parametrize("window", [0, 40])
def test_block_layout_and_split_change_no_bit(window):
    rng = np.random.default_rng(0)
    P, G, H, d = 150, 2, 4, 64  # 150 positions: five blocks, the last one partial
    k = rng.standard_normal((P, G, d)).astype(np.float32)
    v = rng.standard_normal((P, G, d)).astype(np.float32)
    q = rng.standard_normal((P, H, d)).astype(np.float32)
    positions = np.arange(P, dtype=np.int32)
    seq = np.zeros(P, np.int32)
    identity = np.arange(5, dtype=np.int32)
    scattered = np.array([9, 2, 7, 0, 4], np.int32)  # the same sequence in other blocks of a larger pool
    kp1, vp1 = _filled(identity, k, v, 5, rng)
    kp2, vp2 = _filled(scattered, k, v, 12, rng)
    a = attention(q, kp1, vp1, positions, seq, identity[None, :], window)  # (P, H, d)
    b = attention(q, kp2, vp2, positions, seq, scattered[None, :], window)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # the last row alone, its keys split over 2..16 chunks: the same bits as the batched row
    last = P - 1
    for n_split in (2, 3, 16):
        got = attention(q[last:], kp2, vp2, positions[last:], seq[:1], scattered[None, :], window, n_split=n_split)
        np.testing.assert_array_equal(got[0], a[last])
