"""`localllm bench --sweep`: where the time goes, as data and a picture.

Four panels:
- prompt tokens/s and time to first token against prompt length, and
- decode tokens/s against the context already in the cache (when KV reads
  start to matter), each for every thread count asked for;
- the throughput/latency trade-off of batched decoding: tokens/s of all
  sequences against the time per token each sequence sees, one point per
  batch size, through the batching engine.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .threads import set_threads

BATCH_SWEEP = (1, 2, 4, 8, 16)  # batch sizes of the throughput/latency panel


@dataclass
class Point:
    kind: str  # "prefill", "decode" or "batch"
    threads: int
    batch: int
    x: int  # prompt length (prefill), cached context (decode) or batch size (batch)
    tokens_per_s: float
    ttft_ms: float = 0.0


def _tokens(n: int, vocab: int) -> list[int]:
    return np.random.default_rng(2).integers(min(1000, vocab // 2), vocab, n).tolist()


def run_sweep(llm, prompt_lengths, contexts, thread_counts, decode_tokens: int = 16) -> list[Point]:
    session = llm.session
    vocab = llm.model.cfg.vocab_size
    toks = _tokens(max(max(prompt_lengths), max(contexts) + decode_tokens + 1), vocab)
    points = []
    try:
        for th in thread_counts:
            set_threads(th)
            session.cache.clear()
            session.feed(toks[:8])  # warm-up at this thread count
            for n in prompt_lengths:
                session.cache.clear()
                t = time.perf_counter()
                session.feed(toks[:n])
                dt = time.perf_counter() - t
                points.append(Point("prefill", th, 1, n, n / dt, 1000 * dt))
            for ctx in contexts:
                session.cache.clear()
                session.feed(toks[: ctx + 1])
                t = time.perf_counter()
                for tok in toks[ctx + 1 : ctx + 1 + decode_tokens]:
                    session.step(tok)
                points.append(Point("decode", th, 1, ctx, decode_tokens / (time.perf_counter() - t)))
    finally:
        set_threads(llm.threads)
        session.cache.clear()
    return points


def batch_points(results, threads: int) -> list[Point]:
    """Points of batched decode results (bench.run_batched_decode), for the trade-off panel."""
    return [Point("batch", threads, r.batch, r.batch, r.tokens_per_s) for r in results]


def plot(points: list[Point], title: str, path: Path) -> None:
    """Four panels: prompt t/s, TTFT, decode t/s (one line per thread count), and batched
    decode's throughput against per-sequence latency (one point per batch size)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    panels = [("prefill", "tokens_per_s", "prompt length (tokens)", "prompt tokens/s"),
              ("prefill", "ttft_ms", "prompt length (tokens)", "time to first token (ms)"),
              ("decode", "tokens_per_s", "tokens already in the cache", "decode tokens/s")]
    series = sorted({(p.threads, p.batch) for p in points})
    for ax, (kind, field, xlabel, ylabel) in zip(axes, panels):
        for th, b in series:
            pts = sorted((p for p in points if p.kind == kind and p.threads == th and p.batch == b), key=lambda p: p.x)
            if pts:
                ax.plot([p.x for p in pts], [getattr(p, field) for p in pts], marker="o",
                        label=f"{th} thread{'s' if th > 1 else ''}" + (f", batch {b}" if b > 1 else ""))
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax = axes[3]
    batch = sorted((p for p in points if p.kind == "batch"), key=lambda p: p.x)
    if batch:
        latency = [1000 * p.batch / p.tokens_per_s for p in batch]  # ms per token, per sequence
        ax.plot(latency, [p.tokens_per_s for p in batch], marker="o")
        for p, ms in zip(batch, latency):
            ax.annotate(f"B={p.batch}", (ms, p.tokens_per_s), textcoords="offset points", xytext=(4, -10))
        ax.set_title(f"batched decode, {batch[0].threads} threads")
    ax.set_xlabel("time per output token, per sequence (ms)")
    ax.set_ylabel("decode tokens/s, all sequences")
    ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_sweep(points: list[Point], title: str, out_dir: Path) -> tuple[Path, Path | None]:
    """Save the points as JSON, and the plot as PNG when matplotlib is installed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "sweep.json"
    data.write_text(json.dumps({"title": title, "points": [asdict(p) for p in points]}, indent=2))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return data, None
    png = out_dir / "sweep.png"
    plot(points, title, png)
    return data, png
