"""`localllm bench`: prompt-processing and generation speed, llama-bench style,
with each phase placed against this machine's own limits.

pp<N>: N prompt tokens through an empty cache (time to first token is its time).
tg<N>: N tokens decoded one at a time after a 1-token start, as llama-bench does.
For each phase we report the weight bytes it streams per second and the matmul
FLOP/s it achieves, next to the machine's measured read bandwidth and sgemm
rate: the larger fraction says whether the phase is memory- or compute-bound.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ._numba_setup import threading_layer
from .generation import PREFILL_CHUNK


@dataclass
class MachineLimits:
    read_gb_s: float  # streaming read bandwidth with the current thread count
    sgemm_gflop_s: float  # numpy float32 matmul, 1024^3


@dataclass
class PhaseResult:
    test: str  # "pp512" or "tg128"
    batch: int
    n_tokens: int
    tokens_per_s: float
    tokens_per_s_sd: float
    seconds: list = field(default_factory=list)
    weight_gb_s: float = 0.0
    gflop_s: float = 0.0
    bound: str = ""


def measure_machine(threads: int) -> MachineLimits:
    """The machine's limits, measured in a child process so its 512 MB buffer stays out of
    this process's peak memory (which bench users compare with llama.cpp's)."""
    import json
    import subprocess
    import sys

    code = ("import json, numba; from localllm.bench import _measure_here; "
            f"numba.set_num_threads({int(threads)}); print(json.dumps(_measure_here().__dict__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return MachineLimits(**json.loads(out.strip().splitlines()[-1]))


def _measure_here() -> MachineLimits:
    """Read bandwidth (a parallel sum over 512 MB) and sgemm GFLOP/s, best of a few runs."""
    from .kernels.machine import parallel_sum

    buf = np.ones(128 * 1024 * 1024, dtype=np.float32)  # 512 MB, far beyond any cache
    parallel_sum(buf[:1024])  # compile outside the timing
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        parallel_sum(buf)
        best = min(best, time.perf_counter() - t)
    read = buf.nbytes / best / 1e9
    del buf
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return MachineLimits(read, 2 * 1024**3 / best / 1e9)


def _layer_weights(model):
    for L in model.layers:
        yield from (L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down)


def matmul_weight_bytes(model) -> tuple[int, int]:
    """(bytes of the layers' matrices, bytes of the LM head) read by one forward pass."""
    return sum(w.raw.nbytes for w in _layer_weights(model)), model.output.raw.nbytes


def matmul_flops(model) -> tuple[int, int]:
    """(matmul FLOPs per token in the layers, FLOPs of one LM-head row)."""
    layers = sum(2 * w.shape[0] * w.shape[1] for w in _layer_weights(model))
    return layers, 2 * model.output.shape[0] * model.output.shape[1]


def _tokens(n: int, vocab: int, seed: int = 0) -> list[int]:
    # ordinary ids away from the special tokens at the start of most vocabularies
    return np.random.default_rng(seed).integers(min(1000, vocab // 2), vocab, n).tolist()


def _summarize(test: str, n: int, seconds: list[float], bytes_total: float, flops_total: float,
               limits: MachineLimits) -> PhaseResult:
    """bytes_total / flops_total: what the whole timed run streams and computes."""
    rates = [n / s for s in seconds]
    mean = statistics.mean(rates)
    sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
    gb_s = bytes_total * mean / n / 1e9
    gflop_s = flops_total * mean / n / 1e9
    mem_frac = gb_s / limits.read_gb_s
    cmp_frac = gflop_s / limits.sgemm_gflop_s
    bound = "memory" if mem_frac >= cmp_frac else "compute"
    return PhaseResult(test, 1, n, mean, sd, seconds, gb_s, gflop_s, f"{bound} ({max(mem_frac, cmp_frac):.0%} of peak)")


def run_bench(llm, n_prompt: int = 512, n_gen: int = 128, reps: int = 3, limits: MachineLimits | None = None):
    """Time pp and tg on llm's model; returns (results, limits)."""
    model = llm.model
    limits = limits or measure_machine(llm.threads)
    layer_bytes, head_bytes = matmul_weight_bytes(model)
    layer_flops, head_flops = matmul_flops(model)
    vocab = model.cfg.vocab_size
    need = max(n_prompt, n_gen + 1)
    if need > llm.n_ctx:
        raise ValueError(f"bench needs n_ctx >= {need}, have {llm.n_ctx}")
    session = llm.session
    results = []
    if n_prompt > 0:
        prompt = _tokens(n_prompt, vocab)
        session.cache.clear()
        session.feed(prompt[:8])  # warm-up: kernels compiled and threads started
        secs = []
        for _ in range(reps):
            session.cache.clear()
            t = time.perf_counter()
            session.feed(prompt)
            secs.append(time.perf_counter() - t)
        # a prompt chunk reads every weight once, and only the last row reaches the LM head
        chunks = -(-n_prompt // PREFILL_CHUNK)
        results.append(_summarize(f"pp{n_prompt}", n_prompt, secs, layer_bytes * chunks + head_bytes,
                                  layer_flops * n_prompt + head_flops, limits))
    if n_gen > 0:
        toks = _tokens(n_gen + 1, vocab, seed=1)
        secs = []
        for _ in range(reps):
            session.cache.clear()
            session.feed(toks[:1])
            t = time.perf_counter()
            for tok in toks[1:]:
                session.step(tok)
            secs.append(time.perf_counter() - t)
        results.append(_summarize(f"tg{n_gen}", n_gen, secs, (layer_bytes + head_bytes) * n_gen,
                                  (layer_flops + head_flops) * n_gen, limits))
    session.cache.clear()
    return results, limits


def bench_report(llm, results, limits) -> dict:
    from .quant import kernel_path

    return {
        "model": str(llm.path),
        "threads": llm.threads,
        "threading_layer": threading_layer(),
        "kernels": kernel_path(),
        "machine": asdict(limits),
        "results": [asdict(r) for r in results],
    }


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"model: {report['model']}",
        f"threads: {report['threads']} ({report['threading_layer']} layer, {report['kernels']} kernels); "
        f"machine: {m['read_gb_s']:.1f} GB/s read, {m['sgemm_gflop_s']:.0f} GFLOP/s sgemm",
        f"| {'test':>7} | {'t/s':>16} | {'ms/token':>8} | {'weights GB/s':>12} | {'GFLOP/s':>8} | bound",
        f"| {'-' * 7} | {'-' * 16} | {'-' * 8} | {'-' * 12} | {'-' * 8} | -----",
    ]
    for r in report["results"]:
        ms = 1000 / r["tokens_per_s"]
        lines.append(f"| {r['test']:>7} | {r['tokens_per_s']:8.2f} ± {r['tokens_per_s_sd']:5.2f} | {ms:8.2f} | "
                     f"{r['weight_gb_s']:12.2f} | {r['gflop_s']:8.1f} | {r['bound']}")
    pp = [r for r in report["results"] if r["test"].startswith("pp")]
    tg = [r for r in report["results"] if r["test"].startswith("tg")]
    if pp:
        lines.append(f"time to first token ({pp[0]['test']}): {1000 * pp[0]['n_tokens'] / pp[0]['tokens_per_s']:.1f} ms")
    if tg:
        lines.append(f"time per output token: {1000 / tg[0]['tokens_per_s']:.2f} ms")
    return "\n".join(lines)
