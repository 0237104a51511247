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


def check() -> dict:
    failures, digest = [], {}
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
