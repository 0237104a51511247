"""Facts about a GGUF model for `localllm info`, without loading any weights."""

from __future__ import annotations

from typing import Any

from .gguf import open_gguf
from .models import ARCHITECTURES
from .models.config import config_from_gguf


def model_info(path: str) -> dict[str, Any]:
    g = open_gguf(path)
    arch = g.architecture
    facts: dict[str, Any] = {
        "path": str(g.path),
        "file_bytes": g.file_size,
        "architecture": arch,
        "name": g.metadata.get("general.name"),
        "parameters": g.n_params,
        "gguf_version": g.version,
        "tensor_types": {k: {"count": c, "bytes": b} for k, (c, b) in g.quant_mix().items()},
        "tokenizer": g.metadata.get("tokenizer.ggml.model"),
        "tokenizer_pre": g.metadata.get("tokenizer.ggml.pre"),
        "vocab_size": len(g.metadata.get("tokenizer.ggml.tokens", [])),
        "chat_template": "tokenizer.chat_template" in g.metadata,
        "supported": arch in ARCHITECTURES,
    }
    if arch in ARCHITECTURES:
        spec = ARCHITECTURES[arch]
        c = config_from_gguf(g, rope_neox=spec.rope_neox, gemma_style=spec.gemma_style)
        facts.update(
            layers=c.n_layer,
            embedding=c.n_embd,
            heads=c.n_head,
            kv_heads=c.n_head_kv,
            head_dim=c.head_dim,
            feed_forward=c.n_ff,
            context_length=c.n_ctx_train,
            rope_base=c.rope_base,
            sliding_window=c.sliding_window or None,
        )
    facts["kernels"] = kernel_facts()
    return facts


def kernel_facts() -> dict[str, Any]:
    """The matmul kernel path this process would run, and the ones the CPU allows."""
    from .isa import KERNEL_PATH, available_paths

    return {"path": KERNEL_PATH, "available": available_paths()}


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}" if unit else f"{n:.0f}"
        n /= 1000
    return f"{n:.1f}P"


def format_info(f: dict[str, Any]) -> str:
    lines = [
        f"model        {f['path']}",
        f"name         {f['name']}",
        f"architecture {f['architecture']}" + ("" if f["supported"] else "  (not supported for inference)"),
        f"parameters   {_human(f['parameters'])} ({f['parameters']:,})",
        f"file size    {f['file_bytes'] / 2**20:.1f} MiB",
    ]
    if "layers" in f:
        lines += [
            f"layers       {f['layers']}",
            f"embedding    {f['embedding']}",
            f"heads        {f['heads']} (kv heads {f['kv_heads']}, head dim {f['head_dim']})",
            f"feed forward {f['feed_forward']}",
            f"context      {f['context_length']}",
        ]
        if f.get("sliding_window"):
            lines.append(f"sliding win  {f['sliding_window']}")
    lines.append(f"tokenizer    {f['tokenizer']} (pre {f['tokenizer_pre']}, {f['vocab_size']} tokens)")
    lines.append(f"chat template {'yes' if f['chat_template'] else 'no'}")
    k = f["kernels"]
    lines.append(f"kernels      {k['path']} (this CPU can run: {', '.join(k['available'])}; LOCALLLM_KERNELS picks)")
    lines.append("tensor types")
    for name, v in f["tensor_types"].items():
        lines.append(f"  {name:<6} {v['count']:>4} tensors  {v['bytes'] / 2**20:8.1f} MiB")
    return "\n".join(lines)
