"""Encoding speed of the tokenizers on ~100 KB of English (the GPL-2 text).

    python scripts/bench_tokenizer.py [--kb 100] [--repeat 3]

Prints, per model, the first (cold cache) and best of the following runs in
seconds and MB/s. Single-threaded: the tokenizer is pure Python plus the
sentencepiece / regex C extensions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # runnable from a checkout without installing the package

from localllm import hub  # noqa: E402
from localllm.gguf import read_metadata  # noqa: E402
from localllm.tokenizer import tokenizer_from_metadata  # noqa: E402

TEXT = ROOT / "tests" / "reference" / "texts" / "gpl-2.txt"
MODELS = ("smollm2-135m", "gemma3-270m")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=int, default=100, help="size of the text to encode, in KB")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs after the first")
    args = ap.parse_args()

    base = TEXT.read_text(encoding="utf-8")
    target = args.kb * 1000
    text = (base * (target // len(base.encode("utf-8")) + 1))
    text = text.encode("utf-8")[:target].decode("utf-8", errors="ignore")
    size_mb = len(text.encode("utf-8")) / 1e6

    for name in MODELS:
        tok = tokenizer_from_metadata(read_metadata(hub.resolve(name, quiet=True)))
        t0 = time.perf_counter()
        ids = tok.encode(text)
        cold = time.perf_counter() - t0
        best = cold
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            tok.encode(text)
            best = min(best, time.perf_counter() - t0)
        print(f"{name:14s} {size_mb * 1000:6.0f} KB -> {len(ids):6d} tokens | "
              f"first {cold:.3f} s ({size_mb / cold:.2f} MB/s) | best {best:.3f} s ({size_mb / best:.2f} MB/s)")


if __name__ == "__main__":
    main()
