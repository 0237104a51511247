#!/usr/bin/env python3
"""Write a GGUF with a real architecture's shapes and random weights, for speed tests.

The quantized blocks are generated directly (random codes, small finite f16
scales), so even a 7B-shaped file takes seconds, not the hours real
quantization would. The text such a model writes is noise; its speed is real.

    python scripts/make_synthetic_model.py tinyllama-1.1b --type q4_0     # -> models/synthetic-tinyllama-1.1b-q4_0.gguf
    python scripts/make_synthetic_model.py llama2-7b --type q4_0
    python scripts/make_synthetic_model.py tinyllama-1.1b --type q4_k_m   # llama.cpp's Q4_K_M type mix

Every type but q4_k_m puts all matrices in that one type.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from tiny_models import byte_level_alphabet, llama_layer_tensors  # noqa: E402

SHAPES = {
    # name: (layers, dim, heads, kv heads, feed-forward, vocab, context)
    "tinyllama-1.1b": (22, 2048, 32, 4, 5632, 32000, 2048),
    "llama2-7b": (32, 4096, 32, 32, 11008, 32000, 4096),
}
TYPES = {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q5_0": Q.Q5_0, "q8_0": Q.Q8_0, "q4_k": Q.Q4_K, "q6_k": Q.Q6_K,
         "q4_k_m": Q.Q4_K}  # q4_k_m: the base type of a mix, see tensor_type
# byte offsets of the f16 scale fields in each block, each with its value relative to the
# block's scale d; the rest of a block may be any bytes. A min field is set so that weights
# average about zero, as trained ones do: q4_1 is d*q + m (q in 0..15, so m = -7.5 d), q4_k
# is d*sc*q - dmin*m (sc, m in 0..63 from the random scale bytes, so dmin = 7.5 d; a real
# Q4_K_M file has dmin/d around 8).
SCALE_FIELDS = {Q.Q4_0: {0: 1.0}, Q.Q4_1: {0: 1.0, 2: -7.5}, Q.Q5_0: {0: 1.0}, Q.Q8_0: {0: 1.0},
                Q.Q4_K: {0: 1.0, 2: 7.5}, Q.Q6_K: {208: 1.0}}


def use_more_bits(il: int, n_layer: int) -> bool:
    """llama.cpp's rule (src/llama-quant.cpp) for the layers whose attn_v and ffn_down a
    Q4_K_M file keeps in Q6_K: the first and last eighth, and every third layer between."""
    return il < n_layer // 8 or il >= 7 * n_layer // 8 or (il - n_layer // 8) % 3 == 2


def tensor_type(type_name: str, name: str, il: int | None, n_layer: int) -> Q:
    """The type of tensor `name` (in block il, or None outside the blocks).

    q4_k_m follows llama.cpp's choice for a llama model with an untied output:
    output.weight Q6_K, attn_v and ffn_down Q6_K where use_more_bits, all else Q4_K
    (token_embd.weight included).
    """
    if type_name != "q4_k_m":
        return TYPES[type_name]
    if name == "output.weight":
        return Q.Q6_K
    if il is not None and name.endswith((".attn_v.weight", ".ffn_down.weight")) and use_more_bits(il, n_layer):
        return Q.Q6_K
    return Q.Q4_K


def _set_scales(blocks: np.ndarray, qtype, d: np.ndarray) -> None:
    """Write d (and the fields tied to it) into the f16 scale fields of (rows, blocks, bytes)."""
    for off, rel in SCALE_FIELDS[qtype].items():
        v = (d * rel).astype(np.float16)
        blocks[:, :, off:off + 2] = v.view(np.uint8).reshape(*blocks.shape[:2], 2)


@functools.cache
def code_rms(qtype) -> float:
    """RMS of the dequantized weights of random blocks whose d is 1.

    The random codes and in-block sub-scales of each type spread very differently
    (about 5 for q4_0, 260 for q4_k, 1400 for q6_k), so d is divided by this to
    give every type the same weight size.
    """
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(1234)
    raw = rng.integers(0, 256, (64, 16 * size), dtype=np.uint8)
    _set_scales(raw.reshape(64, 16, size), qtype, np.ones((64, 16), np.float32))
    w = gguf.quants.dequantize(raw, qtype)
    return float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))


def random_blocks(rng, qtype, n_rows: int, n_cols: int, rms: float) -> np.ndarray:
    """(n_rows, row_bytes) uint8 of valid blocks: random codes, f16 scales giving weights of about `rms`."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = n_cols // block
    raw = rng.integers(0, 256, (n_rows, nb * size), dtype=np.uint8)
    d = rms / code_rms(qtype) * rng.uniform(0.5, 1.5, (n_rows, nb))
    _set_scales(raw.reshape(n_rows, nb, size), qtype, d)  # a (rows, blocks, bytes) view
    return raw


def write(path: Path, shape: str, type_name: str, seed: int = 0) -> Path:
    n_layer, dim, n_head, n_kv, ff, vocab, ctx = SHAPES[shape]
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"synthetic {shape} {type_name.upper()}")
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

    def mat(name, n_out, n_in, il=None):
        # weights of rms 0.75/sqrt(n_in) (a real model's are similar) keep activations a sane
        # size through the layers; q4_0 files had this size before the types were equalized
        qtype = tensor_type(type_name, name, il, n_layer)
        raw = random_blocks(rng, qtype, n_out, n_in, 0.75 / np.sqrt(n_in))
        w.add_tensor(name, raw, raw_dtype=qtype)

    def vec(name, n):
        w.add_tensor(name, np.ones(n, np.float32))

    mat("token_embd.weight", vocab, dim)
    mat("output.weight", vocab, dim)
    vec("output_norm.weight", dim)
    for il in range(n_layer):
        for name, shape in llama_layer_tensors(il, dim, n_head, n_kv, hd, ff):
            if len(shape) == 1:
                vec(name, *shape)
            else:
                mat(name, *shape, il=il)
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
    write(tmp, args.shape, args.type)
    tmp.replace(out)
    print(out)


if __name__ == "__main__":
    main()
