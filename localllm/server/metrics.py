"""Prometheus metrics of one server, on a registry of its own (so tests can run two servers)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..engine.engine import EngineLoad
from ..generation import Stats

# latency buckets in seconds: a small model's token is milliseconds, a long prompt's TTFT seconds
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class ServerMetrics:
    def __init__(self, load: Callable[[], EngineLoad | None]):
        self.registry = r = CollectorRegistry()
        self._load = load

        def from_load(name: str, doc: str, field: str) -> None:
            Gauge(name, doc, registry=r).set_function(lambda: getattr(self._load() or EngineLoad(), field))

        from_load("localllm_requests_running", "Requests decoding or prefilling in the engine.", "running")
        from_load("localllm_requests_waiting", "Requests queued in the engine.", "waiting")
        from_load("localllm_kv_blocks_used", "KV-cache blocks held by live sequences.", "kv_blocks_used")
        from_load("localllm_kv_blocks_total", "KV-cache blocks in the pool.", "kv_blocks_total")
        from_load("localllm_preemptions", "Requests preempted (and recomputed later) so far.", "preemptions")
        self.requests = Counter("localllm_requests", "Finished generation requests.", ["endpoint", "finish_reason"],
                                registry=r)
        self.rejected = Counter("localllm_requests_rejected", "Requests refused before generation.", ["status"],
                                registry=r)
        self.prompt_tokens = Counter("localllm_prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.cached_tokens = Counter("localllm_prefix_cache_hit_tokens",
                                     "Prompt tokens served from the prefix cache instead of prefilled.", registry=r)
        self.generation_tokens = Counter("localllm_generation_tokens", "Tokens generated.", registry=r)
        self.ttft = Histogram("localllm_time_to_first_token_seconds", "Submit to first token.",
                              buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("localllm_time_per_output_token_seconds", "Mean gap between output tokens.",
                              buckets=TPOT_BUCKETS, registry=r)

    def finished(self, endpoint: str, reason: str, stats: Stats | None) -> None:
        self.requests.labels(endpoint, reason).inc()
        if stats is None:
            return
        self.prompt_tokens.inc(stats.prompt_tokens)
        self.cached_tokens.inc(stats.cached_tokens)
        self.generation_tokens.inc(stats.completion_tokens)
        if stats.completion_tokens:
            self.ttft.observe(stats.time_to_first_token_s)
        if stats.decode_steps:
            self.tpot.observe(stats.decode_s / stats.decode_steps)

    def render(self) -> bytes:
        return generate_latest(self.registry)
