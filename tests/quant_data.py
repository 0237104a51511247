"""Random but valid weight blocks for every supported format (tests and tests/kernel_path_check.py)."""

import numpy as np
from gguf import GGMLQuantizationType as T

from localllm.quant.formats import FORMATS

# Byte offsets of the f16 scale fields inside one block: random bytes elsewhere
# are valid codes, but a random f16 scale may be inf/nan.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_NL: [0], T.IQ4_XS: [0],
}


def random_tensor(qtype, n, k, rng, finite=True):
    """(n, row_bytes) uint8 of valid blocks: random codes, finite f16 scales."""
    if qtype == T.F32:
        return rng.standard_normal((n, k)).astype(np.float32).view(np.uint8)
    if qtype == T.F16:
        return rng.standard_normal((n, k)).astype(np.float16).view(np.uint8)
    if qtype == T.BF16:
        if not finite:
            return rng.integers(0, 256, (n, 2 * k), dtype=np.uint8)
        return (rng.standard_normal((n, k)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    fmt = FORMATS[qtype]
    raw = rng.integers(0, 256, (n, fmt.row_bytes(k)), dtype=np.uint8)
    nb = k // fmt.block_size
    blocks = raw.reshape(n, nb, fmt.type_size)  # (n, nb, type_size) view
    for off in F16_FIELDS[qtype]:
        scale = rng.uniform(-0.1, 0.1, (n, nb)).astype(np.float16)
        blocks[:, :, off : off + 2] = scale.view(np.uint8).reshape(n, nb, 2)
    return raw
