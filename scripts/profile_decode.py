#!/usr/bin/env python3
"""How much of a decode token is Python, and how much is compiled kernels.

The compiled forward pass (embedding, every layer, LM head: one call per token)
is wrapped in a timer. Everything else in the token's wall time (sampling,
detokenizing, stop checks, argument checks, building the batch arrays) is the
Python overhead; the timer's own cost lands there too. This times one Session's
decode loop, the path `logits` and the chat REPL use.

    python scripts/profile_decode.py smollm2-135m -n 256 -t 2
"""

from __future__ import annotations

import argparse
import time

from localllm import LLM
from localllm.generation import Stats, iter_generate
from localllm.sampling import SamplingParams


def _timed(fn, box):
    def wrapper(*args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            box[0] += time.perf_counter() - t
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
    for _ in iter_generate(llm.session, ids, params, llm.tokenizer):  # compile / load every path once
        pass

    box = [0.0]  # seconds inside compiled code
    plan = llm.model.plan
    plan.run = _timed(plan.run, box)  # the instance attribute shadows the method

    stats = Stats()
    t0 = None
    for step in iter_generate(llm.session, ids, params, llm.tokenizer, stats):
        if t0 is None:  # the first token came out of prefill: time decode from here
            t0, box[0] = time.perf_counter(), 0.0
        last = time.perf_counter()
    steps = stats.decode_steps
    wall = last - t0
    per_tok = wall / steps
    python = (wall - box[0]) / steps
    print(f"model {args.model}, {args.threads} threads, {steps} decode steps, temperature {args.temp}")
    print(f"decode: {1e3 * per_tok:.3f} ms per token ({1 / per_tok:.1f} tok/s)")
    print(f"  compiled kernels: {1e3 * (per_tok - python):.3f} ms")
    print(f"  Python overhead:  {1e3 * python:.3f} ms = {100 * python / per_tok:.1f}% of a token")


if __name__ == "__main__":
    main()
