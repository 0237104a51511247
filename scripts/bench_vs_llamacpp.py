#!/usr/bin/env python3
"""localllm against llama.cpp on the same model, prompt length and thread count, in one run.

Each round runs localllm (A) and llama.cpp through llama-cpp-python (B) in fresh
processes, interleaved A B A B, so machine noise hits both alike. It reports
pp and tg tokens/s, time to first token, peak RSS and the start-to-first-token
time of a one-token run, with the ratio localllm / llama.cpp, and appends the
table to docs/benchmarks.md.

llama-cpp-python is not a dependency of localllm: point --llama-python at an
interpreter that has it (e.g. a separate venv), or install it in this one.

    python scripts/bench_vs_llamacpp.py smollm2-135m --threads 2 --llama-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LLAMA_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from llama_cpp import Llama
    path, pp, tg, threads, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    t0 = time.perf_counter()
    llm = Llama(path, n_ctx=max(pp, tg + 1, 16), n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, flash_attn=False, verbose=False)
    vocab = llm.n_vocab()
    rng = np.random.default_rng(0)
    out = {}
    if mode == "start":
        llm.eval([int(rng.integers(1000, vocab))])
        out["start_s"] = time.perf_counter() - t0
    else:
        toks = rng.integers(min(1000, vocab // 2), vocab, max(pp, tg + 1)).tolist()
        llm.eval(toks[:8]); llm.reset()
        t = time.perf_counter(); llm.eval(toks[:pp]); out["pp_s"] = time.perf_counter() - t
        llm.reset(); llm.eval(toks[:1])
        t = time.perf_counter()
        for tok in toks[1:tg + 1]:
            llm.eval([tok])
        out["tg_s"] = time.perf_counter() - t
    print(json.dumps(out))
""")


# A one-child launcher: its RUSAGE_CHILDREN peak is exactly that child's peak RSS (KiB on Linux).
LAUNCHER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r.returncode)")


def run_measured(cmd: list[str]) -> tuple[str, float, float]:
    """Run cmd; return (stdout, wall seconds, peak RSS in MiB of that process)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    rss_kib = int(p.stderr.strip().splitlines()[-1].split()[-1])
    return p.stdout, wall, rss_kib / 1024


def localllm_round(model: str, pp: int, tg: int, threads: int) -> dict:
    out, _, _ = run_measured([sys.executable, "-m", "localllm", "bench", model, "-p", str(pp), "-n", str(tg),
                              "-r", "1", "-t", str(threads), "--json"])
    rep = json.loads(out)
    res = {r["test"][:2]: r for r in rep["results"]}
    return {"pp_tps": res["pp"]["tokens_per_s"], "tg_tps": res["tg"]["tokens_per_s"],
            "ttft_ms": 1000 * pp / res["pp"]["tokens_per_s"],
            "layer": rep["threading_layer"], "kernels": rep["kernels"], "machine": rep["machine"]}


def localllm_rss(model: str, pp: int, tg: int, threads: int) -> float:
    """Peak RSS (MiB) of one `localllm run` over a pp-token prompt and tg generated tokens.

    Measured apart from `bench`, whose machine probe runs in a child with a large buffer.
    """
    from localllm import LLM

    tok = LLM(model, n_ctx=16).tokenizer
    text = (ROOT / "tests" / "reference" / "texts" / "gpl-2.txt").read_text()
    prompt = tok.decode(tok.encode(text)[:pp])
    _, _, rss = run_measured([sys.executable, "-m", "localllm", "run", model, prompt, "-n", str(tg), "--temp", "0",
                              "-c", str(pp + tg + 16), "-t", str(threads)])
    return rss


def llama_round(llama_python: str, path: str, pp: int, tg: int, threads: int) -> dict:
    out, _, rss = run_measured([llama_python, "-c", LLAMA_SCRIPT, path, str(pp), str(tg), str(threads), "bench"])
    r = json.loads(out.strip().splitlines()[-1])
    return {"pp_tps": pp / r["pp_s"], "tg_tps": tg / r["tg_s"], "ttft_ms": 1000 * r["pp_s"], "rss_mib": rss}


def start_times(model: str, path: str, llama_python: str, threads: int) -> tuple[float, float]:
    _, a, _ = run_measured([sys.executable, "-m", "localllm", "run", model, "Hi", "-n", "1", "-t", str(threads)])
    _, b, _ = run_measured([llama_python, "-c", LLAMA_SCRIPT, path, "1", "1", str(threads), "start"])
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="short name or .gguf path")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-python", default=sys.executable, help="interpreter with llama_cpp installed")
    ap.add_argument("--note", default="", help="what the llama.cpp build is (e.g. 'AVX2 build')")
    ap.add_argument("--append", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args()

    from localllm import hub

    path = str(hub.resolve(args.model))
    a_runs, b_runs = [], []
    for i in range(args.rounds):  # interleaved: A B A B
        a_runs.append(localllm_round(args.model, args.pp, args.tg, args.threads))
        b_runs.append(llama_round(args.llama_python, path, args.pp, args.tg, args.threads))
        print(f"round {i + 1}: localllm pp {a_runs[-1]['pp_tps']:.1f} tg {a_runs[-1]['tg_tps']:.1f} | "
              f"llama.cpp pp {b_runs[-1]['pp_tps']:.1f} tg {b_runs[-1]['tg_tps']:.1f}", flush=True)
    start_a, start_b = start_times(args.model, path, args.llama_python, args.threads)
    rss_a = localllm_rss(args.model, args.pp, args.tg, args.threads)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    rows = [
        (f"pp{args.pp} (t/s)", med(a_runs, "pp_tps"), med(b_runs, "pp_tps"), True),
        (f"tg{args.tg} (t/s)", med(a_runs, "tg_tps"), med(b_runs, "tg_tps"), True),
        (f"TTFT {args.pp} tok (ms)", med(a_runs, "ttft_ms"), med(b_runs, "ttft_ms"), False),
        (f"peak RSS, pp{args.pp}+tg{args.tg} (MiB)", rss_a, max(r["rss_mib"] for r in b_runs), False),
        ("start to 1 token (s)", start_a, start_b, False),
    ]
    m = a_runs[0]["machine"]
    cmd = (f"python scripts/bench_vs_llamacpp.py {args.model} --threads {args.threads} --pp {args.pp} "
           f"--tg {args.tg} --rounds {args.rounds} --llama-python {args.llama_python}")
    lines = [
        f"### {args.model}, {args.threads} threads — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{m['read_gb_s']:.1f} GB/s read, {m['sgemm_gflop_s']:.0f} GFLOP/s sgemm; localllm "
        f"{a_runs[0]['kernels']} kernels, {a_runs[0]['layer']} threads; llama.cpp via llama-cpp-python"
        + (f" ({args.note})" if args.note else "") + f". Median of {args.rounds} interleaved rounds.",
        "",
        "| measure | localllm | llama.cpp | ratio (localllm / llama.cpp) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, a, b, higher_better in rows:
        ratio = a / b
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {ratio:.2f}x{'' if higher_better else ' (lower is better)'} |")
    lines += ["", f"Reproduce: `{cmd}`", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.append)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
