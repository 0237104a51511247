"""Check the matmul kernels of the path this process runs (LOCALLLM_KERNELS), standalone.

For every supported weight format: linear() against float64 dequant(W) @ x (through
the int8 activations the x86 paths use), and row invariance: each row of an M-row
call equals, bit for bit, the same row computed alone, for M in ROWS. Prints one
JSON line: the path, the failures, and a digest of every format's outputs, so two
paths can be compared bit for bit (tests/test_kernel_paths.py; on a machine
without pytest: `python tests/kernel_path_check.py`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from quant_data import random_tensor  # noqa: E402

from localllm.quant import SUPPORTED_TYPES, QuantTensor, dequantize, dispatch, kernel_path, linear  # noqa: E402
from localllm.quant.gemm_tiles import M_CHUNK  # noqa: E402

ROWS = (1, 2, 5, 37, M_CHUNK + 7)  # 37: two groups of 16 (avx512 wide path), a four, a one
SHAPES = ((37, 512), (300, 256))


# Attention shapes (T, heads, KV heads, head dim): 4 and 3 heads per KV head, one, and a
# head dim that is not a multiple of 16 (the 16-lane loops' remainder).
ATTENTION_SHAPES = ((70, 4, 1, 256), (45, 9, 3, 64), (29, 2, 2, 72))


def check_attention(failures: list) -> str:
    """Digest of attention outputs over an f16 cache: a prompt in one call and each row
    alone (split over threads or not) must agree bit for bit, and every path's digest
    must be the same (the arithmetic is shared)."""
    from localllm.kernels.attention import attention
    from localllm.kv_cache import BLOCK_SIZE

    rng = np.random.default_rng(7)
    h = hashlib.sha256()
    for T, H, G, d in ATTENTION_SHAPES:
        nb = (T + BLOCK_SIZE - 1) // BLOCK_SIZE + 1
        kc, vc = (rng.standard_normal((nb, G, BLOCK_SIZE, d)).astype(np.float16).view(np.uint16) for _ in range(2))
        tables = rng.permutation(nb).astype(np.int32)[None, :]  # (1, nb) blocks out of order
        q = rng.standard_normal((T, H, d)).astype(np.float32)
        pos, seq = np.arange(T, dtype=np.int32), np.zeros(T, np.int32)
        for window in (0, 20):
            whole = attention(q, kc, vc, pos, seq, tables, window=window)  # (T, H, d)
            for n_split in (1, 3):
                rows = np.concatenate([attention(q[t:t + 1], kc, vc, pos[t:t + 1], seq[:1], tables, window=window,
                                                 n_split=n_split) for t in range(T)])
                if not np.array_equal(rows.view(np.uint32), whole.view(np.uint32)):
                    failures.append(f"attention {(T, H, G, d)} window {window}: rows alone (split {n_split}) "
                                    "differ from the prompt's")
            h.update(whole.tobytes())
    return h.hexdigest()[:16]


def check() -> dict:
    failures, digest = [], {}
    digest["attention"] = check_attention(failures)
    for qtype in SUPPORTED_TYPES:
        rng = np.random.default_rng(100 + int(qtype))
        h = hashlib.sha256()
        for n, k in SHAPES:
            raw = random_tensor(qtype, n, k, rng)
            w = QuantTensor(raw, qtype, (n, k))
            wf = dequantize(raw, qtype, (n, k)).astype(np.float64)
            x = rng.standard_normal((max(ROWS), k)).astype(np.float32)
            alone = np.stack([linear(x[i], w) for i in range(len(x))])  # (M_max, N)
            exact = x.astype(np.float64) @ wf.T
            scale = np.abs(exact).max()
            err = np.abs(alone - exact).max() / scale
            tol = 3e-2 if dispatch.USE_X86 and w.fmt.code in dispatch.KERNELS else 1e-5
            if not err < tol:
                failures.append(f"{qtype.name} {n}x{k}: error {err:.2e} / scale >= {tol}")
            for m in ROWS:
                got = linear(x[:m], w)
                if not np.array_equal(got.view(np.uint32), alone[:m].view(np.uint32)):
                    failures.append(f"{qtype.name} {n}x{k}: M={m} rows differ from the rows alone")
            h.update(alone.tobytes())
        digest[qtype.name] = h.hexdigest()[:16]
    return {"path": kernel_path(), "failures": failures, "digest": digest}


if __name__ == "__main__":
    res = check()
    print(json.dumps(res))
    sys.exit(1 if res["failures"] else 0)
