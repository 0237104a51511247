#!/usr/bin/env python3
"""Load test of the OpenAI-compatible server, optionally side by side with llama.cpp's llama-server.

Like `vllm bench serve`: requests arrive as a Poisson process (--rate per
second; 0 sends them all at once), at most C are in flight, and a level ends
after --requests requests or --duration seconds. Each request is a streamed
/v1/completions call with its own random prompt (so no prefix cache helps),
greedy, `ignore_eos` so every request generates exactly --max-tokens tokens.

Per concurrency level it reports request throughput, output tokens/s, and
TTFT and TPOT (mean gap between a request's tokens after the first) at p50
and p99. Servers run one at a time, alternating for --rounds rounds; the
table shows medians and localllm / llama-server ratios.

    python scripts/bench_server.py smollm2-135m --threads 2 --concurrency 1,4,16 \\
        --llama-server /path/to/llama.cpp/build/bin/llama-server

Build llama-server from the llama-cpp-python source as scripts/bench_vs_llamacpp.py
describes for llama-bench (cmake -DGGML_NATIVE=ON -DLLAMA_BUILD_SERVER=ON, target
llama-server). Importing this file runs nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts
from bench_vs_llamacpp import cpu_model  # noqa: E402
WORDS = ("apple river stone light music paper garden window silver cloud market engine forest winter "
         "candle bridge letter orange summer travel doctor island number yellow pocket").split()


@dataclass
class Sample:
    ttft: float  # seconds from sending to the first token
    tpot: float | None  # mean seconds between later tokens
    tokens: int


def one_request(client: httpx.Client, url: str, prompt: str, max_tokens: int) -> Sample:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    chunks, usage = 0, None
    with client.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            msg = json.loads(line[6:])
            if msg.get("usage"):
                usage = msg["usage"]["completion_tokens"]
            if msg.get("choices") and msg["choices"][0].get("text"):
                last = time.perf_counter()
                first = first or last
                chunks += 1
    tokens = usage or chunks
    if first is None:
        raise RuntimeError("the server streamed no text")
    return Sample(first - t0, (last - first) / (tokens - 1) if tokens > 1 else None, tokens)


def random_prompts(n: int, words: int, seed: int) -> list[str]:
    """Prompts no server has seen, so neither side's prefix cache can skip any prefill."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def run_level(url: str, concurrency: int, n_requests: int, duration: float, rate: float, prompts: list[str],
              max_tokens: int, seed: int) -> dict:
    rng = random.Random(seed)
    gate = threading.Semaphore(concurrency)
    samples: list[Sample] = []
    lock = threading.Lock()
    t_start = time.perf_counter()

    def worker(i: int, client: httpx.Client) -> None:
        try:
            s = one_request(client, url, prompts[i % len(prompts)], max_tokens)
            with lock:
                samples.append(s)
        finally:
            gate.release()

    # a fresh connection per request: llama-server closes idle keep-alive connections, and a reused
    # dead one would fail the request; both servers pay the same (sub-millisecond) loopback connect
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    with httpx.Client(limits=limits) as client, \
            ThreadPoolExecutor(concurrency) as pool:
        futures = []
        next_t = t_start
        for i in range(n_requests):
            if time.perf_counter() - t_start > duration:
                break
            if rate > 0:
                next_t += rng.expovariate(rate)
                time.sleep(max(0.0, next_t - time.perf_counter()))
            gate.acquire()
            futures.append(pool.submit(worker, i, client))
        for f in futures:
            f.result()
    wall = time.perf_counter() - t_start

    def pct(values, q):
        values = sorted(v for v in values if v is not None)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {"requests_per_s": len(samples) / wall, "output_tokens_per_s": sum(s.tokens for s in samples) / wall,
            "ttft_p50": pct([s.ttft for s in samples], 0.5), "ttft_p99": pct([s.ttft for s in samples], 0.99),
            "tpot_p50": pct([s.tpot for s in samples], 0.5), "tpot_p99": pct([s.tpot for s in samples], 0.99),
            "requests": len(samples)}


class Server:
    """A server subprocess on loopback, ready when /health answers 200."""

    def __init__(self, cmd: list[str], url_pattern: str | None, port: int | None):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{port}" if port else None
        deadline = time.monotonic() + 900
        while self.url is None:  # localllm prints its address (we ask for port 0)
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {cmd}")
            m = re.search(url_pattern, line)
            if m:
                self.url = m.group(1)
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server never became ready: {cmd}")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def localllm_server(model: str, threads: int, parallel: int, n_ctx: int) -> Server:
    cmd = [sys.executable, "-m", "localllm", "serve", model, "--port", "0", "-t", str(threads), "--parallel",
           str(parallel), "-c", str(n_ctx), "--max-queue", "1024"]
    return Server(cmd, r"on (http://[\d.]+:\d+)/v1", None)


def llama_server(binary: str, path: str, threads: int, parallel: int, n_ctx: int, port: int) -> Server:
    # -c is the whole KV cache, split over the -np slots (random prompts leave its prompt cache nothing to reuse)
    cmd = [binary, "-m", path, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads),
           "-np", str(parallel), "-c", str(n_ctx * parallel), "--cont-batching", "--threads-http", str(2 * parallel + 4)]
    return Server(cmd, None, port)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a localllm model name or GGUF path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=0, help="per level (default: 4 x concurrency, at least 8)")
    ap.add_argument("--duration", type=float, default=300, help="seconds per level at most")
    ap.add_argument("--rate", type=float, default=0, help="Poisson arrivals per second (0: all at once)")
    ap.add_argument("--prompt-words", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--llama-server", default=None, help="llama-server binary to compare with")
    ap.add_argument("--append", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from localllm import hub

    path = str(hub.resolve(args.model, quiet=True))
    levels = [int(c) for c in args.concurrency.split(",")]
    parallel, n_ctx = max(levels), 1024
    sides = {"localllm": lambda: localllm_server(path, args.threads, parallel, n_ctx)}
    if args.llama_server:
        sides["llama-server"] = lambda: llama_server(args.llama_server, path, args.threads, parallel, n_ctx, 8799)
    results: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in levels} for name in sides}
    for r in range(args.rounds):
        for name, start in (reversed(list(sides.items())) if r % 2 else sides.items()):
            srv = start()
            try:
                with httpx.Client() as warm:  # one short request first, so the timed levels start warm
                    one_request(warm, srv.url, random_prompts(1, args.prompt_words, -1)[0], 4)
                for j, c in enumerate(levels):
                    n = args.requests or max(8, 4 * c)
                    prompts = random_prompts(n, args.prompt_words, seed=1000 * r + j)  # the same for both servers
                    res = run_level(srv.url, c, n, args.duration, args.rate, prompts, args.max_tokens, seed=r)
                    results[name][c].append(res)
                    print(f"round {r + 1} {name} C={c}: {res}", file=sys.stderr, flush=True)
            finally:
                srv.stop()
    table = format_table(args, results, levels)
    print(table)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + table)
    return 0


def format_table(args, results, levels) -> str:
    med = {name: {c: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for c, runs in per.items()}
           for name, per in results.items()}
    lines = [f"### Server load, {Path(args.model).name}, {args.threads} threads - "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"CPU: {cpu_model()}. Streamed /v1/completions, {args.prompt_words}-word random prompts, "
             f"{args.max_tokens} tokens each (ignore_eos, greedy), "
             f"{'all arriving at once' if args.rate == 0 else f'Poisson arrivals at {args.rate}/s'}; "
             f"median of {args.rounds} round(s).", ""]
    names = list(med)
    cols = ["C"] + [f"{n} {what}" for n in names for what in ("req/s", "out tok/s", "TTFT p50/p99 ms",
                                                              "TPOT p50/p99 ms")]
    if len(names) == 2:
        cols.append("out tok/s ratio (localllm / llama-server)")
    lines += ["| " + " | ".join(cols) + " |", "|" + " ---: |" * len(cols)]
    for c in levels:
        cells = []
        for n in names:
            m = med[n][c]
            cells += [f"{m['requests_per_s']:.2f}", f"{m['output_tokens_per_s']:.1f}",
                      f"{1e3 * m['ttft_p50']:.0f} / {1e3 * m['ttft_p99']:.0f}",
                      f"{1e3 * m['tpot_p50']:.1f} / {1e3 * m['tpot_p99']:.1f}"]
        if len(names) == 2:
            ours, theirs = med["localllm"][c], med["llama-server"][c]
            cells.append(f"{ours['output_tokens_per_s'] / theirs['output_tokens_per_s']:.2f}x")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", f"Reproduce: `python scripts/bench_server.py {args.model} --threads {args.threads} "
                  f"--concurrency {args.concurrency} --max-tokens {args.max_tokens} --rounds {args.rounds}"
                  f"{' --llama-server PATH' if args.llama_server else ''}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
