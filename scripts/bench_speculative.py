#!/usr/bin/env python3
"""Speculative decoding (prompt lookup, or a draft model) against plain decoding, in one process, alternating.

Two prompts per model: one whose answer repeats its input (summarize a passage,
or for a base model continue it: lookup's good case) and one that does not (a story: the governor must
keep speculation from costing anything). For each, the decode speed with and
without `--lookup` (tokens after the first / time after the first), whether
the tokens are identical (they must be), the acceptance rate and the mean
guess length the governor chose. Rounds alternate plain and lookup.

    python scripts/bench_speculative.py smollm2-135m --threads 2 --rounds 2 \
        --llama-server /path/to/llama.cpp/build/bin/llama-server

With --draft DRAFT.gguf the guesses come from that draft model instead (the
issue's pair: an F16 target made with `localllm quantize --type f16` from the
Q4 file, which drafts):

    python scripts/bench_speculative.py smollm2-f16.gguf --draft smollm2-135m --threads 2 --rounds 2

With --llama-server, the same prompt ids also go to llama.cpp's server, plain
and with its speculation: prompt lookup (`--spec-type ngram-simple`, its default
n-gram sizes) or the same draft model (`-md DRAFT --spec-type draft-simple --spec-draft-n-max K`, its other
draft settings at their defaults), greedy (top_k 1), one request at a time; the
figure is its own `timings.predicted_per_second`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts
from bench_vs_llamacpp import cpu_model  # noqa: E402
TEXT = (ROOT / "tests" / "reference" / "texts" / "gpl-2.txt").read_text()


def prompts(llm, passage_chars: int = 1600) -> dict[str, list[int]]:
    from localllm.chat import chat_template_from_metadata

    PASSAGE = TEXT[2000 : 2000 + passage_chars]
    if chat_template_from_metadata(llm.gguf.metadata) is None:  # a base model: continue plain text
        return {"repeats its input": llm.prompt_ids(PASSAGE + "\n\n" + PASSAGE[:160]),
                "free text": llm.prompt_ids("Once upon a time, in a small village by the sea,")}
    return {"repeats its input": llm.chat_ids([{"role": "user", "content": PASSAGE + "\n\nSummarize the text above."}]),
            "free text": llm.chat_ids([{"role": "user", "content": "Write a story about a dragon who cooks."}])}


def run_once(llm, ids, n_tokens: int, speculative, draft_model=None) -> tuple[list[int], float, object]:
    from localllm.engine.engine import Engine
    from localllm.sampling import SamplingParams

    engine = Engine(llm.model, llm.tokenizer, llm.n_ctx, llm.threads, max_num_seqs=1, speculative=speculative,
                    draft_model=draft_model if speculative is not None else None)
    try:
        engine.call(lambda: None)  # started, kernels loaded
        events = list(engine.submit(ids, SamplingParams(temperature=0, max_tokens=n_tokens)).events())
    finally:
        engine.close()
    stats = events[-1].stats
    return [ev.step.token_id for ev in events if ev.step.token_id is not None], stats.decode_tokens_per_s, stats


def llama_server_speed(binary: str, path: str, threads: int, runs: list[tuple[list[int], int]],
                       spec: list[str]) -> list[tuple[float, int, int]]:
    """(decode t/s, drafted, accepted) per (prompt ids, n_predict) from one llama-server process;
    spec: its speculation options ([] for none)."""
    import json
    import subprocess
    import tempfile
    import urllib.error
    import urllib.request

    def post(route: str, body: dict) -> dict:  # the standard library: the 16-core machine has no httpx
        req = urllib.request.Request(url + route, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    port = 8797
    cmd = [binary, "-m", path, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-c", "2048",
           "-np", "1"] + spec
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                log.seek(0)
                sys.exit(f"llama-server exited ({proc.returncode}): {log.read().decode(errors='replace')[-1500:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        out = []
        for ids, n in runs:
            r = post("/completion", {"prompt": ids, "n_predict": n, "top_k": 1, "temperature": 0, "cache_prompt": False})
            t = r["timings"]
            out.append((t["predicted_per_second"], t.get("draft_n", 0), t.get("draft_n_accepted", 0)))
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--draft-max", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--passage-chars", type=int, default=1600, help="length of the text the first prompt repeats")
    ap.add_argument("--draft", default=None, metavar="MODEL", help="a draft model instead of prompt lookup")
    ap.add_argument("--llama-server", default=None, metavar="PATH", help="compare with llama.cpp's server")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from localllm import LLM
    from localllm.speculative import SpeculativeConfig

    llm = LLM(args.model, n_ctx=2048, threads=args.threads)
    draft = LLM(args.draft, n_ctx=16, threads=args.threads) if args.draft else None  # its weights only
    if draft is not None:
        why = llm.tokenizer.vocabulary_difference(draft.tokenizer)
        if why:
            sys.exit(f"the draft's vocabulary differs: {why}")
    method = "draft" if draft else "lookup"
    config = SpeculativeConfig(method, args.draft_max)
    source = f"draft model {draft.path.name}" if draft else "prompt lookup"
    lines = [f"speculation by {source}, target {Path(args.model).name}, {cpu_model()}, {args.threads} threads, "
             f"greedy, up to {args.tokens} tokens, draft_max {args.draft_max}, median of {args.rounds} rounds", "",
             f"| prompt | tokens | plain t/s | {method} t/s | speedup | identical | accepted | mean guess |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for name, ids in prompts(llm, args.passage_chars).items():
        plain, spec, same, last = [], [], True, None
        for r in range(args.rounds):
            order = [None, config] if r % 2 == 0 else [config, None]
            outs = {}
            for cfg in order:
                tokens, tps, stats = run_once(llm, ids, args.tokens, cfg, draft.model if draft else None)
                (spec if cfg else plain).append(tps)
                outs[cfg is not None] = tokens
                if cfg:
                    last = stats
            same &= outs[True] == outs[False]
            print(f"{name} round {r + 1}: plain {plain[-1]:.1f} t/s, {method} {spec[-1]:.1f} t/s", file=sys.stderr)
        p, s = statistics.median(plain), statistics.median(spec)
        lines.append(f"| {name} | {len(outs[True])} | {p:.1f} | {s:.1f} | {s / p:.2f}x | {'yes' if same else 'NO'} | "
                     f"{100 * last.acceptance_rate:.0f}% of {last.draft_tokens} | {last.mean_draft_len:.1f} |")
    if args.llama_server:
        runs = [(ids, args.tokens) for ids in prompts(llm, args.passage_chars).values()]
        print("\n".join(lines), flush=True)  # localllm's table first: it stands if the server fails
        lines = []
        options = (["-md", str(draft.path), "--spec-type", "draft-simple", "--spec-draft-n-max", str(args.draft_max)] if draft
                   else ["--spec-type", "ngram-simple"])
        base = llama_server_speed(args.llama_server, str(llm.path), args.threads, runs, [])
        spec = llama_server_speed(args.llama_server, str(llm.path), args.threads, runs, options)
        shown = f"-md {draft.path.name} --spec-type draft-simple --spec-draft-n-max {args.draft_max}" if draft else "--spec-type ngram-simple"
        lines += ["", f"llama-server, same prompts, one run each (`{shown}`):", "",
                  f"| prompt | plain t/s | {method} t/s | speedup | accepted |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, (p, _, _), (s_, drafted, acc) in zip(prompts(llm, args.passage_chars), base, spec):
            lines.append(f"| {name} | {p:.1f} | {s_:.1f} | {s_ / p:.2f}x | {acc} of {drafted} |")
    lines += ["", f"Reproduce: `python scripts/bench_speculative.py {args.model} --threads {args.threads} "
                  f"--tokens {args.tokens} --rounds {args.rounds}{' --draft ' + args.draft if args.draft else ''}"
                  f"{' --llama-server PATH' if args.llama_server else ''}`"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
