"""Tiny random GGUF models of each architecture, written with gguf.GGUFWriter.

They exercise every loader and model code path in milliseconds. The vocabulary
is byte-level BPE over the 256 bytes plus a few merges, so LLM() can build a
tokenizer for them too.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q


def byte_level_alphabet() -> list[str]:
    """GPT-2's reversible byte -> printable character mapping (a published fact of the format)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def _vocab(n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    alpha = byte_level_alphabet()
    tokens = ["<s>", "</s>"] + alpha
    merges = ["Ġ t", "h e", "Ġt he", "i n", "e r"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
    while len(tokens) < n_vocab:
        tokens.append(f"<extra_{len(tokens)}>")
    types = [3, 3] + [1] * (len(tokens) - 2)
    return tokens[:n_vocab], types[:n_vocab], merges


def llama_layer_tensors(il: int, n_embd: int, n_head: int, n_head_kv: int, head_dim: int,
                        n_ff: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of block il's tensors in a llama-shaped model, in file order.

    Shapes are numpy's: (n_out, n_in) for matrices, (n,) for norm weights.
    write_tiny_model and scripts/make_synthetic_model.py both build their
    layers from this; architectures with extra tensors (qwen2's biases,
    gemma3's extra norms) add them after these.
    """
    p = f"blk.{il}."
    return [
        (p + "attn_norm.weight", (n_embd,)),
        (p + "attn_q.weight", (n_head * head_dim, n_embd)),
        (p + "attn_k.weight", (n_head_kv * head_dim, n_embd)),
        (p + "attn_v.weight", (n_head_kv * head_dim, n_embd)),
        (p + "attn_output.weight", (n_embd, n_head * head_dim)),
        (p + "ffn_norm.weight", (n_embd,)),
        (p + "ffn_gate.weight", (n_ff, n_embd)),
        (p + "ffn_up.weight", (n_ff, n_embd)),
        (p + "ffn_down.weight", (n_embd, n_ff)),
    ]


def write_tiny_model(path: Path, arch: str = "llama", qtype: Q = Q.Q8_0, n_layer: int = 2, n_embd: int = 64,
                     n_head: int = 4, n_head_kv: int = 2, head_dim: int | None = None, n_ff: int = 128,
                     n_vocab: int = 300, sliding_window: int = 0, seed: int = 0, tied: bool = True) -> Path:
    """Write a random model; matrices in qtype (row lengths must divide its block size)."""
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_head
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(n_layer)
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-6 if arch == "gemma3" else 1e-5)
    w.add_rope_freq_base(10000.0 if arch != "gemma3" else 1e6)
    if head_dim:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if sliding_window:
        w.add_sliding_window(sliding_window)
    tokens, types, merges = _vocab(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(arch == "gemma3")

    def mat(name, n_out, n_in, scale=None):
        a = rng.standard_normal((n_out, n_in)).astype(np.float32) * np.float32(scale or 1.0 / np.sqrt(n_in))
        if qtype == Q.F32:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    def vec(name, n, around=1.0):
        w.add_tensor(name, (around + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", n_vocab, n_embd, scale=1.0)
    if not tied:
        mat("output.weight", n_vocab, n_embd)
    vec("output_norm.weight", n_embd)
    for il in range(n_layer):
        p = f"blk.{il}."
        for name, shape in llama_layer_tensors(il, n_embd, n_head, n_head_kv, hd, n_ff):
            if len(shape) == 1:
                vec(name, *shape)
            else:
                mat(name, *shape)
        if arch == "qwen2":
            vec(p + "attn_q.bias", n_head * hd, around=0.0)
            vec(p + "attn_k.bias", n_head_kv * hd, around=0.0)
            vec(p + "attn_v.bias", n_head_kv * hd, around=0.0)
        if arch == "gemma3":
            vec(p + "attn_q_norm.weight", hd)
            vec(p + "attn_k_norm.weight", hd)
            vec(p + "post_attention_norm.weight", n_embd)
            vec(p + "post_ffw_norm.weight", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
