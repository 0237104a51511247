"""`localllm bench`: prompt-processing and generation speed, llama-bench style,
with each phase placed against this machine's own limits.

pp<N>: N prompt tokens through an empty cache (time to first token is its time).
tg<N>: N tokens decoded one at a time after a 1-token start, as llama-bench does.
For each phase we report the weight bytes it streams per second and the matmul
FLOP/s it achieves, next to the machine's roofs: the larger fraction says whether
the phase is memory- or compute-bound.

The roofs are measured in a child process (measure_machine):
  * memory: kernels.machine.read_bandwidth, which streams bytes the way the matmul
    kernels stream weights (every thread, wide loads, prefetch), best of a few runs;
  * compute: the better of numpy's sgemm and the project's own integer GEMM
    (quant.linear on a cache-resident Q8_0 1024x1024 matrix, 64 activation rows).
A probe can still come in under what a phase achieves (noise, another process). The
fractions never exceed 100%: each roof is at least the best rate any phase of the
run measured, and the bound says so when a phase raised it.
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
    int8_gop_s: float = 0.0  # quant.linear, Q8_0 (1024, 1024) weights x 64 rows: 2*N*K*M / s

    @property
    def compute_gop_s(self) -> float:
        """The compute peak the matmuls can meet: float or integer, whichever is faster."""
        return max(self.sgemm_gflop_s, self.int8_gop_s)


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
    draft_tokens: int = 0  # with speculation: tokens guessed, and kept, over the timed runs
    accepted_tokens: int = 0


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
    """Read bandwidth (kernels.machine.read_bandwidth over 512 MB), sgemm GFLOP/s and int8
    GEMM GOP/s, each the best of a few runs."""
    from .kernels.machine import read_bandwidth

    read = read_bandwidth(512 << 20)  # far beyond any cache
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return MachineLimits(read, 2 * 1024**3 / best / 1e9, int8_gemm_gop_s())


def q8_0_weights(n: int, k: int, rng) -> np.ndarray:
    """(n, k // 32 * 34) uint8 of valid Q8_0 blocks: a small finite f16 scale, 32 int8 codes."""
    nb = k // 32
    blocks = np.empty((n, nb, 34), np.uint8)
    blocks[:, :, :2] = rng.uniform(1e-3, 1e-2, (n, nb)).astype(np.float16).view(np.uint8).reshape(n, nb, 2)
    blocks[:, :, 2:] = rng.integers(-127, 128, (n, nb, 32), dtype=np.int8).view(np.uint8)
    return blocks.reshape(n, nb * 34)


def int8_gemm_gop_s(n: int = 1024, k: int = 1024, m: int = 64, reps: int = 20) -> float:
    """Integer GEMM rate of the project's own quant.linear: Q8_0 (n, k) weights, whose 1.1 MB
    stay in cache, times m activation rows (quantized to Q8_0 inside linear, as in the model)."""
    from gguf import GGMLQuantizationType

    from .quant import QuantTensor, linear

    rng = np.random.default_rng(0)
    w = QuantTensor(q8_0_weights(n, k, rng), GGMLQuantizationType.Q8_0, (n, k))
    x = rng.standard_normal((m, k)).astype(np.float32)
    out = np.empty((m, n), np.float32)
    linear(x, w, out)  # compile (or load) outside the timing
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        linear(x, w, out)
        best = min(best, time.perf_counter() - t)
    if not np.isfinite(out).all():
        raise RuntimeError("int8 GEMM probe gave non-finite results")
    return 2 * n * k * m / best / 1e9


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


def _bound(gb_s: float, gflop_s: float, limits: MachineLimits, best_gb_s: float = 0.0,
           best_gflop_s: float = 0.0) -> str:
    """'memory (83% of peak)' or 'compute (...)': the phase's larger fraction of the roofs.

    Each roof is the probe's figure, raised to the best rate a measured phase reached
    (best_gb_s / best_gflop_s, and this phase's own): a fraction never exceeds 100%, and
    the text says when the probe came in under a measured phase."""
    mem_roof = max(limits.read_gb_s, best_gb_s, gb_s)
    cmp_roof = max(limits.compute_gop_s, best_gflop_s, gflop_s)
    mem_frac = gb_s / mem_roof if mem_roof > 0 else 0.0
    cmp_frac = gflop_s / cmp_roof if cmp_roof > 0 else 0.0
    if mem_frac >= cmp_frac:
        kind, frac, raised = "memory", mem_frac, mem_roof > limits.read_gb_s
        why = "probe below measured"
    else:
        kind, frac, raised = "compute", cmp_frac, cmp_roof > limits.compute_gop_s
        why = "sgemm and int8 probes below measured"
    return f"{kind} ({frac:.0%} of peak{'; ' + why if raised else ''})"


def _summarize(test: str, n: int, seconds: list[float], bytes_total: float, flops_total: float,
               limits: MachineLimits) -> PhaseResult:
    """bytes_total / flops_total: what the whole timed run streams and computes. The bound is
    placed against the probes and this phase alone; apply_roofline places a run's phases together."""
    rates = [n / s for s in seconds]
    mean = statistics.mean(rates)
    sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
    gb_s = bytes_total * mean / n / 1e9
    gflop_s = flops_total * mean / n / 1e9
    return PhaseResult(test, 1, n, mean, sd, seconds, gb_s, gflop_s, _bound(gb_s, gflop_s, limits))


def roofline(results, limits: MachineLimits) -> dict:
    """The run's roofs: each probe's figure, or the best phase rate where that is higher."""
    best_mem = max(results, key=lambda r: r.weight_gb_s, default=None)
    best_cmp = max(results, key=lambda r: r.gflop_s, default=None)
    peak_name = "int8" if limits.int8_gop_s >= limits.sgemm_gflop_s else "sgemm"
    mem_raised = best_mem is not None and best_mem.weight_gb_s > limits.read_gb_s
    cmp_raised = best_cmp is not None and best_cmp.gflop_s > limits.compute_gop_s
    return {
        "read_gb_s": best_mem.weight_gb_s if mem_raised else limits.read_gb_s,
        "read_from": best_mem.test if mem_raised else "probe",
        "compute_gop_s": best_cmp.gflop_s if cmp_raised else limits.compute_gop_s,
        "compute_from": best_cmp.test if cmp_raised else peak_name,
    }


def apply_roofline(results, limits: MachineLimits) -> None:
    """Re-place every phase's bound against the roofs of the whole run (see roofline)."""
    roofs = roofline(results, limits)
    for r in results:
        r.bound = _bound(r.weight_gb_s, r.gflop_s, limits, roofs["read_gb_s"], roofs["compute_gop_s"])


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
    apply_roofline(results, limits)
    return results, limits


def run_batched_decode(llm, batches, n_prompt: int = 128, n_gen: int = 128, reps: int = 2,
                       limits: MachineLimits | None = None, speculative: bool = False):
    """Decode throughput with B sequences at once through the engine, for each B in batches.

    B distinct prompts of n_prompt tokens are prefilled together (one step), then the
    engine decodes all B each step until each has n_gen tokens, as llama-batched-bench's
    S_TG: tokens_per_s counts every sequence's tokens after the first, over the time from
    the last first token to the last token. End tokens are ignored so every sequence runs
    to n_gen. Per-sequence latency is batch / tokens_per_s. speculative: decode with the
    LLM's speculation (prompt lookup or its draft model), counting guesses kept.
    """
    from .engine.engine import Engine
    from .sampling import SamplingParams

    model = llm.model
    limits = limits or measure_machine(llm.threads)
    layer_bytes, head_bytes = matmul_weight_bytes(model)
    layer_flops, head_flops = matmul_flops(model)
    vocab = model.cfg.vocab_size
    params = SamplingParams(max_tokens=n_gen, temperature=0.0)
    results = []
    for b in batches:
        spec = {"speculative": llm.speculative, "draft_model": llm.draft} if speculative else {}
        eng = Engine(model, llm.tokenizer, n_prompt + n_gen, llm.threads, max_num_seqs=b,
                     max_num_batched_tokens=max(512, b * n_prompt), kv_dtype=llm.kv_dtype, **spec)
        drafted = accepted = 0
        try:
            eng.call(lambda: None)  # engine thread started
            w = eng.submit(_tokens(8, vocab, seed=99), SamplingParams(max_tokens=2, temperature=0.0),
                           ignore_eos=True)
            list(w.events())  # warm-up at this batch size's thread
            secs = []
            for rep in range(reps):
                handles = [eng.submit(_tokens(n_prompt, vocab, seed=1000 * rep + i), params, ignore_eos=True)
                           for i in range(b)]
                firsts, lasts = [], []
                for h in handles:  # events carry the engine's emission times
                    events = list(h.events())
                    firsts.append(next(ev.time for ev in events if ev.step.token_id is not None))
                    lasts.append(events[-1].time)
                    drafted += events[-1].stats.draft_tokens
                    accepted += events[-1].stats.accepted_tokens
                secs.append(max(lasts) - max(firsts))
        finally:
            eng.close()
        n = b * (n_gen - 1)
        res = _summarize(f"tg{n_gen}", n, secs, (layer_bytes + head_bytes) * (n_gen - 1),
                         (layer_flops + head_flops) * n, limits)
        res.batch = b
        res.draft_tokens, res.accepted_tokens = drafted, accepted
        results.append(res)
    return results, limits


def bench_report(llm, results, limits) -> dict:
    from .quant import kernel_path

    return {
        "model": str(llm.path),
        "threads": llm.threads,
        "threading_layer": threading_layer(),
        "kernels": kernel_path(),
        "machine": asdict(limits),
        "roofline": roofline(results, limits),
        "results": [asdict(r) for r in results],
    }


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"model: {report['model']}",
        f"threads: {report['threads']} ({report['threading_layer']} layer, {report['kernels']} kernels); "
        f"machine: {m['read_gb_s']:.1f} GB/s read, {m['sgemm_gflop_s']:.0f} GFLOP/s sgemm, "
        f"{m.get('int8_gop_s', 0.0):.0f} GOP/s int8",
    ]
    roofs = report.get("roofline")
    if roofs and (roofs["read_from"] != "probe" or roofs["compute_from"] not in ("int8", "sgemm")):
        lines.append(f"roofs: memory {roofs['read_gb_s']:.1f} GB/s (from {roofs['read_from']}), compute "
                     f"{roofs['compute_gop_s']:.0f} GOP/s (from {roofs['compute_from']}); "
                     "a phase that beat its probe sets that roof")
    lines += [
        f"| {'test':>7} | {'batch':>5} | {'t/s':>16} | {'ms/token':>8} | {'weights GB/s':>12} | {'GFLOP/s':>8} | bound",
        f"| {'-' * 7} | {'-' * 5} | {'-' * 16} | {'-' * 8} | {'-' * 12} | {'-' * 8} | -----",
    ]
    for r in report["results"]:
        ms = 1000 * r.get("batch", 1) / r["tokens_per_s"]  # per sequence
        lines.append(f"| {r['test']:>7} | {r.get('batch', 1):>5} | {r['tokens_per_s']:8.2f} ± {r['tokens_per_s_sd']:5.2f} | {ms:8.2f} | "
                     f"{r['weight_gb_s']:12.2f} | {r['gflop_s']:8.1f} | {r['bound']}")
    pp = [r for r in report["results"] if r["test"].startswith("pp")]
    tg = [r for r in report["results"] if r["test"].startswith("tg")]
    if pp:
        lines.append(f"time to first token ({pp[0]['test']}): {1000 * pp[0]['n_tokens'] / pp[0]['tokens_per_s']:.1f} ms")
    if tg:
        for r in tg:
            lines.append(f"time per output token (batch {r.get('batch', 1)}): "
                         f"{1000 * r.get('batch', 1) / r['tokens_per_s']:.2f} ms")
            if r.get("draft_tokens"):
                lines.append(f"  speculation: {r['accepted_tokens']} of {r['draft_tokens']} guesses kept")
    return "\n".join(lines)
