"""A cold start's kernel compile, spread over the machine's cores.

numba compiles on one core. From an empty kernel cache the forward pass spent
87 s compiling Gemma 3's kernels on 2 cores, most of it in leaves that do not
depend on each other: each weight format's matmul, attention, the small row
kernels. The forward pass calls them through an address table
(kernels.by_address, built by `leaf_table`), so its own compile needs none of
them either. Before the first forward pass, the leaves and the forward pass are
split into groups and compiled at once, one group per process (this one
included), into numba's shared on-disk cache; this process then loads them.

numba's cache index is not safe when two processes add *different*
specializations of one function at the same time (each may write the other's
data file name). So no two groups compile the same cached function: the few
callees that two groups reach are compiled here first (`_SHARED`), before any
helper starts.

`LOCALLLM_PARALLEL_COMPILE` sets the number of processes (default: the cores
this process may run on); 0 or 1 turns it off. Nothing about the result depends
on it: the same kernels are compiled, in a different order.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
from gguf import GGMLQuantizationType
from numba import types
from numba.core import event

from ..kernels import activations, attention, convert, fmath, norms, rope
from ..kernels.by_address import address_table
from ..quant import matmul_table, q8act
from ..quant.dequant import ROW_KERNELS
from ..quant.dispatch import FLOAT_CODES, KERNELS
from ..quant.matmul_table import TABLE_CODES

# Rough compile seconds on a 2-core machine, to balance the groups (measured one by one
# on a 2-core AMD EPYC, avx2 path; only their order matters).
_MATMUL_SECONDS = {GGMLQuantizationType.Q4_K: 8.0, GGMLQuantizationType.Q6_K: 11.0,
                   GGMLQuantizationType.Q5_K: 9.0}  # the 32-wide formats: about 5
_ATTENTION_SECONDS, _SPLIT_SECONDS, _ROW_KERNELS_SECONDS, _FORWARD_SECONDS = 12.5, 12.0, 14.0, 1.0

# Callees that more than one group reaches: compiled before the groups start.
_SHARED = ((fmath.expf_ggml_call, (types.float32,)),)


class LeafGroup(NamedTuple):
    name: str
    seconds: float  # rough compile time, to balance the processes
    work: list  # [(dispatcher, argument types)]


@dataclass
class Build:
    """What the last parallel compile did (tests read it)."""

    workers: list = field(default_factory=list)  # per process: the group names it compiled
    compiled: list = field(default_factory=list)  # per process: cached functions it compiled
    seconds: float = 0.0


last_build: Build | None = None


def _array(dtype, ndim: int, readonly: bool = False) -> types.Array:
    return types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C", readonly=readonly)


def leaf_groups(plan, pool) -> list[LeafGroup]:
    """The forward pass's leaf kernels for this model (its formats, KV dtype, attention
    split) with the argument types forward_pass calls them with: the address table is
    built from these, and a call whose types differ finds no entry and raises."""
    from .forward_pass import CODE, SPLIT_ATTENTION  # forward_pass imports this module

    f32_1, f32_2, f32_3 = _array(np.float32, 1), _array(np.float32, 2), _array(np.float32, 3)
    i32_1, i32_2, i64_1 = _array(np.int32, 1), _array(np.int32, 2), _array(np.int64, 1)
    raw2 = _array(np.uint8, 2, readonly=True)  # (N, row_bytes) view of the model file
    kv4 = numba.typeof(pool.k[0])  # (NB, G, bs, d) one layer of the paged cache
    codes = [c for i, c in enumerate(TABLE_CODES) if plan.mask >> i & 1]
    groups = []
    for code in codes:
        if code in KERNELS:
            acts = (_array(np.int8, 2), f32_2, f32_2, _array(np.int32, 2))
            groups.append(LeafGroup(f"{GGMLQuantizationType(code).name} matmul", _MATMUL_SECONDS.get(code, 5.0),
                                    [(KERNELS[code], (raw2, *acts, f32_2, types.int64))]))
    scalars = (types.int64, types.float32)  # the layer's window, the score softcap
    attn = [(attention.attention_rows, (f32_3, kv4, kv4, i32_1, i32_1, i32_2, *scalars, f32_3))]
    seconds = _ATTENTION_SECONDS
    if plan.mask & SPLIT_ATTENTION:
        attn.append((attention.attention_split,
                     (f32_3, kv4, kv4, i32_1, types.int64, *scalars, types.int64, f32_3)))
        seconds += _SPLIT_SECONDS
    groups.append(LeafGroup("attention", seconds, attn))

    # float and generic matmuls share dequant's row functions with the embedding row:
    # they go with it, into the row kernels' group
    float_kernels = {matmul_table.mm_float if c in FLOAT_CODES else matmul_table.mm_generic
                     for c in codes if c not in KERNELS}
    kinds = sorted({q8act.ACT_FORMAT[c] for c in codes if c in KERNELS})
    quantizers = [(q, (f32_2, types.literal(k), _array(np.int8, 2), f32_2, f32_2, _array(np.int32, 2)))
                  for q in (q8act.quantize_activations, q8act.quantize_activations_par) for k in kinds]
    ro_vec = _array(np.float32, 1, readonly=True)  # a norm's weights
    rope_args = (f32_3, f32_3, i32_1, types.float64, types.int64, types.boolean, types.float64,
                 numba.typeof(plan.freq_factors))
    rows = quantizers + [
        (norms.rmsnorm_rows, (f32_2, f32_2, ro_vec, types.float32)),
        (norms.rmsnorm_rows_par, (f32_2, f32_2, ro_vec, types.float32)),
        (rope.rope_qk, rope_args),
        (rope.rope_qk_par, rope_args),
        (activations.swiglu, (f32_2, f32_2, f32_2)),
        (activations.geglu_tanh, (f32_2, f32_2, f32_2, numba.typeof(plan.gelu_table))),
        (convert.store_kv, (kv4, kv4, f32_3, f32_3, i64_1)),
        (ROW_KERNELS[int(plan.emb[CODE])], (_array(np.uint8, 1, readonly=True), f32_1)),
    ] + [(k, (raw2, types.int64, f32_2, f32_2, types.int64)) for k in sorted(float_kernels, key=_address)]
    groups.append(LeafGroup("row kernels", _ROW_KERNELS_SECONDS, rows))
    return groups


def leaf_table(plan, pool) -> np.ndarray:
    """The address table the forward pass calls its leaf kernels through, compiling (or
    loading from the cache) each of them."""
    return address_table(w for g in leaf_groups(plan, pool) for w in g.work)


def compile_groups(plan, pool) -> list[LeafGroup]:
    """The leaves' groups and the forward pass's own compile: what a cold start compiles."""
    from .forward_pass import forward_batch  # forward_pass imports this module

    forward = LeafGroup("forward pass", _FORWARD_SECONDS, [(forward_batch, plan.signature(pool))])
    return leaf_groups(plan, pool) + [forward]


def is_cached(dispatcher, sig) -> bool:
    """Whether numba's on-disk cache holds this specialization (reads the index only)."""
    cache = dispatcher._cache  # numba's Cache; no public call answers this without loading
    try:
        key = cache._index_key(tuple(sig), dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except (AttributeError, OSError, EOFError, pickle.UnpicklingError):
        return False


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _bins(groups, n: int) -> list[list]:
    """The groups in n bins of about equal seconds, largest first (greedy)."""
    bins, loads = [[] for _ in range(n)], [0.0] * n
    for g in sorted(groups, key=lambda g: -g.seconds):
        i = loads.index(min(loads))
        bins[i].append(g)
        loads[i] += g.seconds
    return bins


def _address(dispatcher) -> tuple[str, str]:
    f = dispatcher.py_func
    return f.__module__, f.__name__


def cached_name(dispatcher) -> str | None:
    """module.function of a dispatcher numba caches on disk; None for one it does not
    (overload implementations), which no two processes can race on."""
    if type(getattr(dispatcher, "_cache", None)).__name__ == "NullCache":
        return None
    return ".".join(_address(dispatcher))


def _compile_all(work) -> list[str]:
    """Compile each (dispatcher, sig); the cached functions that compiled (not loaded)."""
    with event.install_recorder("numba:compile") as rec:
        for disp, sig in work:
            disp.compile(tuple(sig))
    return sorted({cached_name(ev.data["dispatcher"]) for _, ev in rec.buffer} - {None})


@contextlib.contextmanager
def compile_lock():
    """Hold the kernel cache against other localllm processes while this one compiles into it.

    The index race above also exists between two programs started at once on a cold cache
    (say a server and a chat over different models); the second waits, then loads. Where
    there is no flock (Windows) or the cache cannot hold a lock file, nothing is held.
    """
    try:
        import fcntl
        cache = Path(numba.config.CACHE_DIR)
        cache.mkdir(parents=True, exist_ok=True)
        f = open(cache / ".localllm-compile.lock", "a")
    except (ImportError, OSError, TypeError):  # TypeError: no cache directory configured
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def compile_leaves(plan, pool) -> None:
    """Compile the forward pass and its leaf kernels in parallel if the cache lacks any of them."""
    global last_build
    setting = os.environ.get("LOCALLLM_PARALLEL_COMPILE", "")
    processes = int(setting) if setting.isdigit() else _cores()
    if processes < 2:
        return
    groups = [g for g in compile_groups(plan, pool) if not all(is_cached(d, s) for d, s in g.work)]
    n = min(processes, len(groups))
    if n < 2:
        return  # at most one group to compile: this process compiles it on first use
    t0 = time.perf_counter()
    _compile_all(_SHARED)
    bins = _bins(groups, n)
    helpers = []
    try:
        for b in bins[1:]:
            helpers.append(_start_helper([(_address(d), s) for g in b for d, s in g.work]))
        mine = _compile_all([w for g in bins[0] for w in g.work])
        theirs = [_finish_helper(p, report) for p, report in helpers]
    except OSError:  # no interpreter to start (an embedded Python): this process compiles the rest
        mine, theirs = [], []
    finally:
        for p, _ in helpers:
            if p.poll() is None:
                p.kill()
    last_build = Build([[g.name for g in b] for b in bins], [mine] + theirs, time.perf_counter() - t0)


def _start_helper(work) -> tuple[subprocess.Popen, object]:
    """A helper process compiling work, and the file its report goes to."""
    # a fresh interpreter, not multiprocessing: spawn would rerun an unguarded user script
    env = dict(os.environ)  # the same kernel cache and kernel path; and this localllm
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    report = tempfile.TemporaryFile()
    p = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=report,
                         stderr=subprocess.DEVNULL, env=env)
    p.stdin.write(pickle.dumps(work))
    p.stdin.close()
    return p, report


def _finish_helper(p: subprocess.Popen, report) -> list[str]:
    """The names a helper compiled; none if it failed (the forward pass compiles the rest)."""
    p.wait()
    report.seek(0)
    lines = report.read().decode(errors="replace").strip().splitlines()
    report.close()
    if p.returncode != 0 or not lines:
        return []
    return json.loads(lines[-1])


def _helper_main() -> None:
    work = []
    for (module, name), sig in pickle.loads(sys.stdin.buffer.read()):
        work.append((getattr(importlib.import_module(module), name), sig))
    print(json.dumps(_compile_all(work)))


if __name__ == "__main__":
    _helper_main()
