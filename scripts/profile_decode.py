#!/usr/bin/env python3
"""How much of a decode token is Python, and how much is compiled kernels.

The compiled forward pass (embedding, every layer, LM head: one call per token)
is wrapped in a timer. Everything else in the token's wall time (scheduling,
sampling, detokenizing, stop checks, building the batch arrays, handing the
event over) is the Python overhead; the timer's own cost lands there too. This
times one request's decode through the engine, the path every generation takes.

    python scripts/profile_decode.py smollm2-135m -n 256 -t 2
"""

from __future__ import annotations

import argparse
import time

from localllm import LLM
from localllm.sampling import SamplingParams


def _timed(fn, calls: list[tuple[float, float]]):
    def wrapper(*args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            calls.append((t, time.perf_counter()))
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("-n", type=int, default=256, help="tokens to decode")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--temp", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    args = ap.parse_args()

    llm = LLM(args.model, threads=args.threads, n_ctx=args.n + 64)
    # default sampling chain, with the stop tokens banned so every run decodes n tokens
    params = SamplingParams(max_tokens=args.n, temperature=args.temp, seed=1,
                            logit_bias={t: float("-inf") for t in llm.tokenizer.stop_ids})
    ids = llm.tokenize("Once upon a time", add_bos=llm.tokenizer.add_bos)
    list(llm.engine.submit(ids, params).events())  # compile / load every path once, on the engine thread

    calls: list[tuple[float, float]] = []  # (start, end) of each compiled forward pass
    plan = llm.model.plan
    plan.run = _timed(plan.run, calls)  # the instance attribute shadows the method
    token_times = [ev.time for ev in llm.engine.submit(ids, params).events() if ev.step.token_id is not None]
    t0, last = token_times[0], token_times[-1]  # the first token came out of prefill: time decode from there
    steps = len(token_times) - 1
    kernels = sum(end - start for start, end in calls if start >= t0)
    llm.close()
    wall = last - t0
    per_tok = wall / steps
    python = (wall - kernels) / steps
    print(f"model {args.model}, {args.threads} threads, {steps} decode steps, temperature {args.temp}")
    print(f"decode: {1e3 * per_tok:.3f} ms per token ({1 / per_tok:.1f} tok/s)")
    print(f"  compiled kernels: {1e3 * (per_tok - python):.3f} ms")
    print(f"  Python overhead:  {1e3 * python:.3f} ms = {100 * python / per_tok:.1f}% of a token")


if __name__ == "__main__":
    main()
