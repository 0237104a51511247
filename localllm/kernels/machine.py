"""Tiny kernels that measure the machine itself (bench's roofline figures).

read_probe streams a byte buffer the way the matmul kernels stream weights, so its
rate is a fair memory roof for them: every thread reads about 4 contiguous chunks
(prange hands them out statically, as it does the kernels' row tiles), with 32-byte
loads and, as the kernels do, a software prefetch ahead of each cache line. The
bytes are ORed together and each chunk's OR is stored and checked, so LLVM can skip
no load. On the portable path a plain OR over a uint64 view does the same (LLVM
vectorizes it; numba has no portable prefetch).

read_bandwidth takes the best over a few prefetch distances and runs: the hardware
prefetchers of some CPUs do better alone (a 2-core EPYC: ~20 GB/s without, ~17 with
2 KiB), others need the help (the 2-core Xeon's kernels, gemm_tiles.PF_BYTES).

The former probe, a float sum over 64 chunks, reported 7.5-11.5 GB/s on a 2-core
machine whose decode kernels read 19-23 GB/s.
"""

import time

import numba
import numpy as np
from numba import njit, prange

import localllm._numba_setup  # noqa: F401
from localllm.quant.dispatch import USE_X86

STEP = 128  # bytes per inner iteration: 4 loads of 32 bytes, 2 cache lines
CHUNKS_PER_THREAD = 4
# Prefetch distances tried, in bytes (0: none). 4096 is the matmul kernels' (gemm_tiles.PF_BYTES).
PF_DISTANCES = (0, 512, 2048, 4096)


if USE_X86:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    from localllm.quant.simd_x86 import i8x32, load32, prefetch, v_or

    @intrinsic
    def _fold64(typingctx, v):
        """The OR of an I8x32's four 64-bit lanes, as a uint64."""
        if v != i8x32:
            return None

        def codegen(context, builder, sig, args):
            q = builder.bitcast(args[0], ir.VectorType(ir.IntType(64), 4))
            lanes = [builder.extract_element(q, ir.Constant(ir.IntType(32), i)) for i in range(4)]
            return builder.or_(builder.or_(lanes[0], lanes[1]), builder.or_(lanes[2], lanes[3]))

        return types.uint64(v), codegen

    @njit(cache=True, parallel=True)
    def _read_chunks(buf, out, pf):
        """out[c] = OR of chunk c of buf (a 1-D uint8 array), prefetching pf bytes ahead
        (0: no software prefetch); returns the bytes read."""
        n_chunks = out.shape[0]
        per = buf.shape[0] // n_chunks // STEP * STEP
        for c in prange(n_chunks):
            lo = c * per
            a0, a1 = load32(buf, lo), load32(buf, lo + 32)
            a2, a3 = load32(buf, lo + 64), load32(buf, lo + 96)
            for o in range(lo + STEP, lo + per, STEP):
                if pf > 0:
                    prefetch(buf, o + pf)
                    prefetch(buf, o + 64 + pf)
                a0 = v_or(a0, load32(buf, o))
                a1 = v_or(a1, load32(buf, o + 32))
                a2 = v_or(a2, load32(buf, o + 64))
                a3 = v_or(a3, load32(buf, o + 96))
            out[c] = _fold64(v_or(v_or(a0, a1), v_or(a2, a3)))
        return per * n_chunks

else:

    @njit(cache=True, parallel=True)
    def _read_chunks(words, out, pf):
        """out[c] = OR of chunk c of words (a C-contiguous 1-D uint64 view of the buffer:
        a view taken inside numba would be strided, and its loads scalar); returns the
        bytes read. pf is ignored: numba has no portable prefetch."""
        n_chunks = out.shape[0]
        per = words.shape[0] // n_chunks // (STEP // 8) * (STEP // 8)
        for c in prange(n_chunks):
            chunk = words[c * per : (c + 1) * per]
            acc = np.uint64(0)
            for i in range(chunk.shape[0]):  # from 0: LLVM drops the negative-index select
                acc |= chunk[i]
            out[c] = acc
        return 8 * per * n_chunks


def read_probe(buf: np.ndarray, pf: int = 0) -> tuple[int, np.ndarray]:
    """Stream all of buf (bytes, C-contiguous) with every thread, prefetching pf bytes
    ahead (0: none); returns (bytes read, the per-chunk ORs). A tail shorter than
    STEP bytes a chunk is left unread and uncounted."""
    buf = np.ascontiguousarray(buf).view(np.uint8).reshape(-1)
    out = np.zeros(CHUNKS_PER_THREAD * numba.get_num_threads(), np.uint64)
    if buf.shape[0] < STEP * out.shape[0]:
        raise ValueError(f"read_probe needs at least {STEP * out.shape[0]} bytes")
    if not USE_X86:
        buf = buf[: buf.shape[0] // 8 * 8].view(np.uint64)
    return _read_chunks(buf, out, int(pf)), out


def read_bandwidth(nbytes: int = 512 << 20, reps: int = 3) -> float:
    """Best streaming read rate (GB/s) over an nbytes buffer with every thread: reps
    runs at each of PF_DISTANCES.

    The buffer is filled (untouched calloc pages would all map the one zero page) and
    every chunk's OR is checked, so a probe that skipped loads would fail, not flatter.
    """
    fill = 0x5A
    buf = np.full(nbytes, fill, np.uint8)
    read_probe(buf[: STEP * CHUNKS_PER_THREAD * numba.get_num_threads()])  # compile outside the timing
    best = float("inf")
    done = 0
    for _ in range(reps):
        for pf in PF_DISTANCES:
            t = time.perf_counter()
            done, ors = read_probe(buf, pf)
            best = min(best, time.perf_counter() - t)
            if not (ors == np.uint64(fill * 0x0101010101010101)).all():
                raise RuntimeError("the read probe's ORs are wrong: it did not read every byte")
    return done / best / 1e9
