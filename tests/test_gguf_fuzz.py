"""Seeded fuzzing of a tiny model's header and tensor table.

Every mutated file must end in one of:
- a clean refusal: a LocalLLMError whose message is one line under 500 characters;
- a load that runs: finite logits; and for a mutation of the tensor table,
  exactly the unchanged file's logits and greedy output (the table either still
  describes the same tensors or the file must be refused).
Anything else (another exception, a long or multi-line message, NaN logits,
changed output after a table mutation) is counted as a failure.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

from gguf_surgery import gguf_string, layout, patch, set_value
from localllm import LLM
from localllm.errors import LocalLLMError
from tiny_models import write_tiny_model

SEED = 15
N_TABLE = 130  # mutations of the tensor table
N_HEADER = 150  # mutations of the header and metadata
PROMPT = [5, 17, 42, 100, 7]
MAX_MESSAGE = 500

FLOAT_KEYS = ("llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon")
INT_KEYS = ("llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
            "llama.attention.head_count", "llama.attention.head_count_kv")
SPECIAL_FLOATS = (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-45, 1e-30, 0.5, 1.0, 3e38, 1e6)
QTYPE_IDS = [int(q) for q in Q] + [29, 30, 31, 40, 99, 1 << 31]


def _flip_bit(data: bytes, pos: int, rng) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << int(rng.integers(8))
    return bytes(out)


# ---- mutations of the tensor table: (name, data) -----------------------------------


def table_mutation(data: bytes, rng) -> tuple[str, bytes]:
    lay = layout(data)
    t = lay.tensors[int(rng.integers(len(lay.tensors)))]
    kind = str(rng.choice(["name", "dims", "type", "offset", "count", "n_dims", "byte"]))
    if kind == "name":
        pos = t.start + 8 + int(rng.integers(len(t.name)))
        return kind, _flip_bit(data, pos, rng)
    if kind == "dims":
        k = int(rng.integers(len(t.dims)))
        d = t.dims[k]
        new = int(rng.choice([d * 2, d // 2, d + 1, d - 1, 0, 1, 32, 1 << 33, d ^ (1 << int(rng.integers(40)))]))
        return kind, patch(data, t.dims_pos + 8 * k, "<Q", new % (1 << 64))
    if kind == "type":
        return kind, patch(data, t.type_pos, "<I", int(rng.choice(QTYPE_IDS)))
    if kind == "offset":
        others = [u.offset for u in lay.tensors]
        new = int(rng.choice([t.offset ^ (1 << int(rng.integers(40))), t.offset + 32, max(t.offset - 32, 0),
                              others[int(rng.integers(len(others)))], int(rng.integers(1 << 20)) * 32]))
        return kind, patch(data, t.offset_pos, "<Q", new)
    if kind == "count":
        (n,) = struct.unpack_from("<Q", data, 8)
        new = int(rng.choice([n - 1, n + 1, n - 9, n + 3, 0, n ^ (1 << int(rng.integers(64)))]))
        return kind, patch(data, 8, "<Q", new % (1 << 64))
    if kind == "n_dims":
        return kind, patch(data, t.dims_pos - 4, "<I", int(rng.choice([0, 1, 2, 3, 4, 5, 1 << 20])))
    pos = int(rng.integers(lay.tensors[0].start, lay.table_end))
    return kind, _flip_bit(data, pos, rng)


# ---- mutations of the header and metadata -------------------------------------------


def header_mutation(data: bytes, rng) -> tuple[str, bytes]:
    lay = layout(data)
    kv = lay.kvs[int(rng.integers(len(lay.kvs)))]
    kind = str(rng.choice(["key_byte", "value_type", "length", "hyper_float", "hyper_int", "hyper_string",
                           "kv_count", "byte"]))
    if kind == "key_byte":
        return kind, _flip_bit(data, kv.start + 8 + int(rng.integers(len(kv.key))), rng)
    if kind == "value_type":
        return kind, patch(data, kv.type_pos, "<I", int(rng.choice(list(range(14)) + [99])))
    if kind == "length":
        # a key's length, or a string value's length
        strings = [k.start for k in lay.kvs] + [k.value_pos for k in lay.kvs if k.vtype == V.STRING]
        pos = strings[int(rng.integers(len(strings)))]
        (n,) = struct.unpack_from("<Q", data, pos)
        new = int(rng.choice([n + 1, n - 1, n + 1000, n * 256, n ^ (1 << int(rng.integers(64)))]))
        return kind, patch(data, pos, "<Q", new % (1 << 64))
    if kind == "hyper_float":
        key = FLOAT_KEYS[int(rng.integers(len(FLOAT_KEYS)))]
        v = float(rng.choice(SPECIAL_FLOATS)) if rng.random() < 0.7 else float(np.exp(rng.normal(0, 20)))
        return kind, patch(data, lay.kv(key).value_pos, "<f", v)
    if kind == "hyper_int":
        key = INT_KEYS[int(rng.integers(len(INT_KEYS)))]
        (old,) = struct.unpack_from("<I", data, lay.kv(key).value_pos)
        new = int(rng.choice([0, 1, 2, 3, old + 1, old - 1, old * 2, 1 << 31, (1 << 32) - 1,
                              int(rng.integers(1 << 32))]))
        return kind, patch(data, lay.kv(key).value_pos, "<I", new % (1 << 32))
    if kind == "hyper_string":
        key = (FLOAT_KEYS + INT_KEYS)[int(rng.integers(len(FLOAT_KEYS) + len(INT_KEYS)))]
        return kind, set_value(data, key, V.STRING, gguf_string("x" * int(rng.integers(0, 2000))))
    if kind == "kv_count":
        (n,) = struct.unpack_from("<Q", data, 16)
        new = int(rng.choice([n - 1, n + 1, 0, n ^ (1 << int(rng.integers(64)))]))
        return kind, patch(data, 16, "<Q", new % (1 << 64))
    pos = int(rng.integers(24, lay.table_end if rng.random() < 0.2 else lay.tensors[0].start))
    return kind, _flip_bit(data, pos, rng)


# ---- running a case -----------------------------------------------------------------


def run_case(path) -> tuple[str, object]:
    """("refused", message) | ("ran", (greedy ids, logits)) | ("other", description)."""
    try:
        llm = LLM(str(path), n_ctx=32)
        ids = llm.generate(PROMPT, max_tokens=4, temperature=0).token_ids
        logits = llm.logits(PROMPT)
    except LocalLLMError as e:
        msg = str(e)
        if "\n" in msg or len(msg) >= MAX_MESSAGE:
            return "other", f"bad message ({len(msg)} chars): {msg[:200]!r}"
        return "refused", msg
    except Exception as e:  # noqa: BLE001 - any other exception is a finding
        return "other", f"{type(e).__name__}: {str(e)[:200]}"
    return "ran", (list(ids), logits)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = write_tiny_model(tmp_path_factory.mktemp("fuzz") / "base.gguf", "llama", Q.Q4_1, n_vocab=300, seed=3)
    outcome, result = run_case(path)
    assert outcome == "ran"
    return path.read_bytes(), result


def test_fuzzed_header_and_table(tmp_path, base):
    data, (ref_ids, ref_logits) = base
    rng = np.random.default_rng(SEED)
    counts: Counter = Counter()
    failures = []
    no_ops = 0
    t0 = time.perf_counter()
    path = tmp_path / "case.gguf"
    for i in range(N_TABLE + N_HEADER):
        table = i < N_TABLE
        kind, mutated = table_mutation(data, rng) if table else header_mutation(data, rng)
        no_ops += mutated == data  # some draws write back the value that was there
        path.write_bytes(mutated)
        outcome, result = run_case(path)
        if outcome == "ran":
            ids, logits = result
            if ids == ref_ids and np.array_equal(logits, ref_logits):
                outcome = "unchanged"
            elif table:
                outcome, result = "other", f"a table mutation changed the output: {ids} vs {ref_ids}"
            elif np.isfinite(logits).all():
                outcome = "finite"
            else:
                outcome, result = "other", "non-finite logits"
        counts[outcome] += 1
        if outcome == "other":
            failures.append(f"case {i} ({'table' if table else 'header'} {kind}): {result}")
    elapsed = time.perf_counter() - t0
    print(f"\nfuzz: {N_TABLE + N_HEADER} cases in {elapsed:.1f} s: {counts['refused']} clean refusals, "
          f"{counts['unchanged']} accepted-and-unchanged ({no_ops} byte-identical), "
          f"{counts['finite']} accepted-finite, {counts['other']} anything else")
    assert not failures, "\n".join(failures[:20])
    assert counts["refused"] > (N_TABLE + N_HEADER) // 2  # most mutations of a header must be caught
    assert counts["unchanged"] + counts["finite"] > 0  # and the harmless ones still load


# ---- the same through the CLI ---------------------------------------------------------


def _cli_cases(data: bytes) -> dict[str, bytes]:
    lay = layout(data)
    q = lay.tensor("blk.0.attn_q.weight")
    return {
        "type shrunk": patch(data, q.type_pos, "<I", Q.Q4_0),
        "name length": patch(data, lay.tensors[0].start, "<Q", 18_000_000),
        "nan rope base": patch(data, lay.kv("llama.rope.freq_base").value_pos, "<f", math.nan),
        "string for a float": set_value(data, "llama.attention.layer_norm_rms_epsilon", V.STRING,
                                        gguf_string("tiny\n" * 10_000)),
    }


@pytest.mark.parametrize("command", ["info", "run"])
def test_cli_refuses_in_one_line(tmp_path, base, command):
    for label, mutated in _cli_cases(base[0]).items():
        path = tmp_path / "bad.gguf"
        path.write_bytes(mutated)
        extra = ["hi", "--raw", "-n", "1"] if command == "run" else []
        r = subprocess.run([sys.executable, "-m", "localllm", command, str(path), *extra],
                           capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1, (label, r.returncode, r.stderr[-500:])
        assert len(lines) == 1 and len(lines[0]) < MAX_MESSAGE, (label, r.stderr[:1000])
        assert lines[0].startswith("error: ") and "--debug" not in lines[0] and "Traceback" not in r.stderr, label
