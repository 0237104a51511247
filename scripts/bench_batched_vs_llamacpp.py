#!/usr/bin/env python3
"""Batched decode: localllm's engine against llama.cpp's llama-batched-bench, in one run.

For each batch size B, both decode B sequences at once after a prompt of NPP
tokens each, NTG tokens per sequence; the figure is llama-batched-bench's S_TG
(B * NTG / decode time, all sequences together) and localllm's `bench -b` tg
row (the same count over the same phase). Rounds alternate llama.cpp and
localllm in fresh processes (B A B A) so machine noise hits both; the table
shows the median of the rounds and the ratio localllm / llama.cpp, the CPU
(/proc/cpuinfo's model name) and the thread count.

    python scripts/bench_batched_vs_llamacpp.py smollm2-135m --threads 2 \\
        --llama-batched-bench ~/llama.cpp/build/bin/llama-batched-bench

Build llama-batched-bench natively as scripts/bench_vs_llamacpp.py describes for
llama-bench (target llama-batched-bench). Importing this file runs nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts
from bench_vs_llamacpp import cpu_model  # noqa: E402


def llama_batched(binary: str, model: str, batches: list[int], npp: int, ntg: int, threads: int) -> dict[int, float]:
    """{B: S_TG t/s} from one llama-batched-bench run (jsonl output)."""
    n_ctx = (npp + ntg) * max(batches)
    cmd = [binary, "-m", model, "-c", str(n_ctx), "-b", "2048", "-ub", "512", "-npp", str(npp), "-ntg", str(ntg),
           "-npl", ",".join(map(str, batches)), "-t", str(threads), "--output-format", "jsonl"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"llama-batched-bench failed: {res.stderr.strip().splitlines()[-1:]}")
    out = {}
    for line in res.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rec = json.loads(line)
            out[int(rec["pl"])] = float(rec["speed_tg"])
    return out


def localllm_batched(model: str, batches: list[int], npp: int, ntg: int, threads: int) -> dict[int, float]:
    """{B: tokens/s of all sequences} from `localllm bench -b` (tg rows)."""
    cmd = [sys.executable, "-m", "localllm", "bench", model, "-p", str(npp), "-n", str(ntg), "-r", "1",
           "-b", ",".join(map(str, batches)), "-t", str(threads), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"localllm bench failed: {res.stderr.strip().splitlines()[-1:]}")
    report = json.loads(res.stdout)
    return {int(r["batch"]): float(r["tokens_per_s"]) for r in report["results"] if r["test"].startswith("tg")}


def table(model: str, threads: int, batches: list[int], lc_rounds, ll_rounds, npp: int, ntg: int) -> str:
    lines = [f"batched decode, {Path(model).name}, {cpu_model()}, {threads} threads, prompt {npp}, "
             f"{ntg} tokens per sequence, median of {len(lc_rounds)} rounds",
             "", "| B | llama.cpp S_TG t/s | localllm t/s | ratio | localllm ms/token per sequence |",
             "|---:|---:|---:|---:|---:|"]
    for b in batches:
        lc = statistics.median(r[b] for r in lc_rounds)
        ll = statistics.median(r[b] for r in ll_rounds)
        lines.append(f"| {b} | {lc:.1f} | {ll:.1f} | {ll / lc:.2f}x | {1000 * b / ll:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="short name or .gguf path")
    ap.add_argument("--llama-batched-bench", required=True, metavar="PATH")
    ap.add_argument("--threads", "-t", type=int, default=2)
    ap.add_argument("-b", "--batches", default="1,4,16")
    ap.add_argument("--npp", type=int, default=128)
    ap.add_argument("--ntg", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from localllm import hub

    model = str(hub.resolve(args.model, quiet=True))
    batches = [int(b) for b in args.batches.split(",")]
    lc_rounds, ll_rounds = [], []
    for _ in range(args.rounds):
        lc_rounds.append(llama_batched(args.llama_batched_bench, model, batches, args.npp, args.ntg, args.threads))
        ll_rounds.append(localllm_batched(model, batches, args.npp, args.ntg, args.threads))
    print(table(model, args.threads, batches, lc_rounds, ll_rounds, args.npp, args.ntg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
