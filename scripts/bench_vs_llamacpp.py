#!/usr/bin/env python3
"""localllm against llama.cpp on the same model, prompt length and thread count, in one run.

Each round runs llama.cpp (B) and localllm (A) in fresh processes, interleaved
B A B A, so machine noise hits both alike. It reports pp and tg tokens/s, time
to first token, peak RSS and the start-to-first-token time of a one-token run,
with the ratio localllm / llama.cpp, and appends the table to docs/benchmarks.md
with the CPU (/proc/cpuinfo's model name), the llama.cpp flavour and the thread
count. Give exactly one llama.cpp:

--llama-bench PATH: the llama-bench binary of a native llama.cpp build, the fair
  comparison (its kernels are compiled for this CPU: AVX-512 / VNNI where the CPU
  has them). Build it with:

    git clone https://github.com/ggml-org/llama.cpp && cd llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \\
          -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
    cmake --build build --target llama-bench -j    # -> build/bin/llama-bench

  If the native build crashes in its AMX path (ggml_backend_amx_mul_mat, SIGSEGV,
  seen on a VM), add -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF to
  the first cmake: AVX-512 stays on. Each round runs
  `llama-bench -m MODEL -t THREADS -p PP -n TG -r 1 -o json` (llama-bench's own
  warm-up run, then one timed run per test) and reads avg_ts of the pp entry
  (n_prompt > 0, n_gen == 0) and the tg entry (n_gen > 0, n_prompt == 0); the
  one-token start time runs `-p 1 -n 0 -r 1 --no-warmup`.

--llama-python PY: an interpreter with llama-cpp-python installed (e.g. a separate
  venv; it is not a dependency of localllm). Its wheel's build flags decide its
  kernels (docs/benchmarks.md names the AVX2 build used there).

    python scripts/bench_vs_llamacpp.py smollm2-135m --threads 2 --llama-bench ~/llama.cpp/build/bin/llama-bench
    python scripts/bench_vs_llamacpp.py smollm2-135m --threads 2 --llama-python /path/to/venv/bin/python

Importing this file runs nothing (tests load its functions with importlib).
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


def llama_python_round(llama_python: str, path: str, pp: int, tg: int, threads: int) -> dict:
    out, _, rss = run_measured([llama_python, "-c", LLAMA_SCRIPT, path, str(pp), str(tg), str(threads), "bench"])
    r = json.loads(out.strip().splitlines()[-1])
    return {"pp_tps": pp / r["pp_s"], "tg_tps": tg / r["tg_s"], "ttft_ms": 1000 * r["pp_s"], "rss_mib": rss}


def llama_bench_cmd(binary: str, path: str, pp: int, tg: int, threads: int) -> list[str]:
    return [binary, "-m", path, "-t", str(threads), "-p", str(pp), "-n", str(tg), "-r", "1", "-o", "json"]


def parse_llama_bench(out: str) -> dict:
    """llama-bench -o json output -> {"pp_tps", "tg_tps", "build"}: avg_ts of the pp entry
    (n_prompt > 0, n_gen == 0) and of the tg entry (n_gen > 0, n_prompt == 0)."""
    start, end = out.find("["), out.rfind("]")  # the JSON array; anything around it is not ours
    if start < 0 or end < start:
        raise ValueError(f"no JSON list in llama-bench output: {out[:200]!r}")
    entries = json.loads(out[start:end + 1])
    pp = [e for e in entries if e.get("n_prompt", 0) > 0 and e.get("n_gen", 0) == 0]
    tg = [e for e in entries if e.get("n_gen", 0) > 0 and e.get("n_prompt", 0) == 0]
    if not pp or not tg:
        raise ValueError(f"llama-bench output lacks a pp or a tg entry: {entries!r:.300}")
    first = entries[0]
    build = ", ".join(str(first[k]) for k in ("build_commit", "build_number", "backends") if first.get(k))
    return {"pp_tps": float(pp[0]["avg_ts"]), "tg_tps": float(tg[0]["avg_ts"]), "build": build}


def llama_bench_round(binary: str, path: str, pp: int, tg: int, threads: int) -> dict:
    out, _, rss = run_measured(llama_bench_cmd(binary, path, pp, tg, threads))
    r = parse_llama_bench(out)
    return {"pp_tps": r["pp_tps"], "tg_tps": r["tg_tps"], "ttft_ms": 1000 * pp / r["pp_tps"], "rss_mib": rss,
            "build": r["build"]}


def llama_round(args, path: str) -> dict:
    if args.llama_bench:
        return llama_bench_round(args.llama_bench, path, args.pp, args.tg, args.threads)
    return llama_python_round(args.llama_python, path, args.pp, args.tg, args.threads)


def start_times(model: str, path: str, args) -> tuple[float, float]:
    """Wall seconds from start to one token: `localllm run`, and llama.cpp's one-token run."""
    threads = args.threads
    if args.llama_bench:
        cmd = [args.llama_bench, "-m", path, "-t", str(threads), "-p", "1", "-n", "0", "-r", "1", "--no-warmup",
               "-o", "json"]
    else:
        cmd = [args.llama_python, "-c", LLAMA_SCRIPT, path, "1", "1", str(threads), "start"]
    _, b, _ = run_measured(cmd)
    _, a, _ = run_measured([sys.executable, "-m", "localllm", "run", model, "Hi", "-n", "1", "-t", str(threads)])
    return a, b


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The first "model name" line of /proc/cpuinfo (platform's guess where there is none)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def llama_python_version(llama_python: str) -> str:
    p = subprocess.run([llama_python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else "unknown version"


def llama_flavour(args, first_round: dict) -> str:
    """What llama.cpp ran: the llama-bench binary (and its build), or llama-cpp-python and its version."""
    if args.llama_bench:
        build = first_round.get("build")
        text = f"native llama-bench `{args.llama_bench}`" + (f" ({build})" if build else "")
    else:
        text = f"llama-cpp-python {llama_python_version(args.llama_python)} (`{args.llama_python}`)"
    return text + (f", {args.note}" if args.note else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\nImporting this file")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="short name or .gguf path")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--llama-bench", metavar="PATH",
                       help="llama-bench binary of a native llama.cpp build (cmake -DGGML_NATIVE=ON; add "
                            "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF if its AMX path crashes); "
                            "run as PATH -m MODEL -t THREADS -p PP -n TG -r 1 -o json")
    which.add_argument("--llama-python", metavar="PY", help="interpreter with llama-cpp-python installed")
    ap.add_argument("--note", default="", help="anything more to say about the llama.cpp build (e.g. 'AVX2 build')")
    ap.add_argument("--append", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args()

    from localllm import hub

    path = str(hub.resolve(args.model))
    a_runs, b_runs = [], []
    for i in range(args.rounds):  # interleaved: B A B A
        b_runs.append(llama_round(args, path))
        a_runs.append(localllm_round(args.model, args.pp, args.tg, args.threads))
        print(f"round {i + 1}: llama.cpp pp {b_runs[-1]['pp_tps']:.1f} tg {b_runs[-1]['tg_tps']:.1f} | "
              f"localllm pp {a_runs[-1]['pp_tps']:.1f} tg {a_runs[-1]['tg_tps']:.1f}", flush=True)
    start_a, start_b = start_times(args.model, path, args)
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
    text = format_table(args, a_runs, b_runs, rows)
    print(text)
    out = Path(args.append)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        f.write(text + "\n")


def format_table(args, a_runs: list[dict], b_runs: list[dict], rows: list[tuple]) -> str:
    """The markdown section appended to docs/benchmarks.md."""
    m = a_runs[0]["machine"]
    which = f"--llama-bench {args.llama_bench}" if args.llama_bench else f"--llama-python {args.llama_python}"
    cmd = (f"python scripts/bench_vs_llamacpp.py {args.model} --threads {args.threads} --pp {args.pp} "
           f"--tg {args.tg} --rounds {args.rounds} {which}")
    lines = [
        f"### {args.model}, {args.threads} threads — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"CPU: {cpu_model()} ({os.cpu_count()} cores); {args.threads} threads for both. "
        f"llama.cpp: {llama_flavour(args, b_runs[0])}.",
        "",
        f"Machine: {m['read_gb_s']:.1f} GB/s read, {m['sgemm_gflop_s']:.0f} GFLOP/s sgemm, "
        f"{m.get('int8_gop_s', 0.0):.0f} GOP/s int8; localllm {a_runs[0]['kernels']} kernels, "
        f"{a_runs[0]['layer']} threads. Median of {args.rounds} interleaved rounds (llama.cpp first).",
        "",
        "| measure | localllm | llama.cpp | ratio (localllm / llama.cpp) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, a, b, higher_better in rows:
        ratio = a / b
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {ratio:.2f}x{'' if higher_better else ' (lower is better)'} |")
    lines += ["", f"Reproduce: `{cmd}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
