"""Where a prompt chunk's time goes: each kernel's share of one forward over N tokens.

    python scripts/profile_prefill.py MODEL [-p 512] [-t THREADS]

Runs the chunk twice (the first compiles or loads kernels), then once under cProfile,
and prints the kernels by total time. Every kernel is one Python-level call, so its
time is the compiled work plus one launch; what remains is the Python glue.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    from localllm import LLM

    llm = LLM(args.model, n_ctx=args.n_prompt + 8, threads=args.threads)
    vocab = llm.model.cfg.vocab_size
    ids = np.random.default_rng(0).integers(0, vocab, args.n_prompt)
    model = llm.model
    for _ in range(2):
        t = time.perf_counter()
        model.forward(ids, model.new_cache(args.n_prompt + 8))
        wall = time.perf_counter() - t
    print(f"{args.model}: pp{args.n_prompt} {wall:.3f} s ({args.n_prompt / wall:.1f} t/s), "
          f"threads {llm.threads}")
    prof = cProfile.Profile()
    prof.enable()
    model.forward(ids, model.new_cache(args.n_prompt + 8))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
