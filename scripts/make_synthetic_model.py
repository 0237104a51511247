#!/usr/bin/env python3
"""Write a GGUF with a real architecture's shapes and random weights, for speed tests.

The quantized blocks are generated directly (random codes, small finite f16
scales), so even a 7B-shaped file takes seconds, not the hours real
quantization would. The text such a model writes is noise; its speed is real.

    python scripts/make_synthetic_model.py tinyllama-1.1b --type q4_0     # -> models/synthetic-tinyllama-1.1b-q4_0.gguf
    python scripts/make_synthetic_model.py llama2-7b --type q4_0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from tiny_models import byte_level_alphabet  # noqa: E402

SHAPES = {
    # name: (layers, dim, heads, kv heads, feed-forward, vocab, context)
    "tinyllama-1.1b": (22, 2048, 32, 4, 5632, 32000, 2048),
    "llama2-7b": (32, 4096, 32, 32, 11008, 32000, 4096),
}
TYPES = {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q5_0": Q.Q5_0, "q8_0": Q.Q8_0, "q4_k": Q.Q4_K, "q6_k": Q.Q6_K}
# byte offsets of f16 scale fields in each block: the rest of a block may be any bytes
SCALE_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q8_0: [0], Q.Q4_K: [0, 2], Q.Q6_K: [208]}


def random_blocks(rng, qtype, n_rows: int, n_cols: int, scale: float) -> np.ndarray:
    """(n_rows, row_bytes) uint8 of valid blocks: random codes, f16 scales near `scale`."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = n_cols // block
    raw = rng.integers(0, 256, (n_rows, nb * size), dtype=np.uint8)
    blocks = raw.reshape(n_rows, nb, size)  # (rows, blocks, bytes) view
    for off in SCALE_FIELDS[qtype]:
        d = (scale * rng.uniform(0.5, 1.5, (n_rows, nb))).astype(np.float16)
        blocks[:, :, off:off + 2] = d.view(np.uint8).reshape(n_rows, nb, 2)
    return raw


def write(path: Path, shape: str, qtype: Q, seed: int = 0) -> Path:
    n_layer, dim, n_head, n_kv, ff, vocab, ctx = SHAPES[shape]
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"synthetic {shape} {qtype.name}")
    w.add_block_count(n_layer)
    w.add_context_length(ctx)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(dim // n_head)
    # a byte-level vocabulary padded to the real size: enough for llama.cpp and localllm to load
    tokens = ["<s>", "</s>"] + byte_level_alphabet()
    tokens += [f"<extra_{i}>" for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3] + [1] * (vocab - 2))
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)

    hd = dim // n_head

    def mat(name, n_out, n_in):
        # scales chosen so activations keep a sane size through the layers
        raw = random_blocks(rng, qtype, n_out, n_in, 0.02 / np.sqrt(n_in / 64))
        w.add_tensor(name, raw, raw_dtype=qtype)

    def vec(name, n):
        w.add_tensor(name, np.ones(n, np.float32))

    mat("token_embd.weight", vocab, dim)
    mat("output.weight", vocab, dim)
    vec("output_norm.weight", dim)
    for il in range(n_layer):
        p = f"blk.{il}."
        vec(p + "attn_norm.weight", dim)
        mat(p + "attn_q.weight", n_head * hd, dim)
        mat(p + "attn_k.weight", n_kv * hd, dim)
        mat(p + "attn_v.weight", n_kv * hd, dim)
        mat(p + "attn_output.weight", dim, n_head * hd)
        vec(p + "ffn_norm.weight", dim)
        mat(p + "ffn_gate.weight", ff, dim)
        mat(p + "ffn_up.weight", ff, dim)
        mat(p + "ffn_down.weight", dim, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--type", default="q4_0", choices=sorted(TYPES))
    ap.add_argument("--out", default=None, help="output path (default: models/synthetic-SHAPE-TYPE.gguf)")
    args = ap.parse_args()
    out = Path(args.out or ROOT / "models" / f"synthetic-{args.shape}-{args.type}.gguf")
    tmp = out.with_name(out.name + ".partial")
    write(tmp, args.shape, TYPES[args.type])
    tmp.replace(out)
    print(out)


if __name__ == "__main__":
    main()
