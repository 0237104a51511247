"""bench's roofline: the read probe reads every byte, the int8 roof is measured, and a
phase's bound never exceeds 100% when it beats the probes."""

import math

import numba
import numpy as np
from gguf import GGMLQuantizationType as Q

from localllm.bench import (MachineLimits, PhaseResult, _summarize, apply_roofline, format_report,
                            int8_gemm_gop_s, q8_0_weights, roofline)
from localllm.kernels.machine import CHUNKS_PER_THREAD, STEP, read_bandwidth, read_probe
from localllm.quant import dequantize


def test_read_probe_reads_every_byte():
    n_chunks = CHUNKS_PER_THREAD * numba.get_num_threads()
    per = 64 * STEP
    buf = np.zeros(n_chunks * per, np.uint8)
    # one distinct bit at the last byte of each chunk, and one at the first byte of chunk 0
    for c in range(n_chunks):
        buf[(c + 1) * per - 1] = 1 << (c % 8)
    buf[0] |= 0x80
    done, ors = read_probe(buf)
    assert done == buf.nbytes and ors.shape == (n_chunks,)
    for c in range(n_chunks):
        want = (1 << (c % 8)) << 56  # little-endian: the chunk's last byte is the top byte
        if c == 0:
            want |= 0x80
        assert int(ors[c]) == want, (c, hex(int(ors[c])))
    done_pf, ors_pf = read_probe(buf, 2048)
    assert done_pf == done and (ors_pf == ors).all()


def test_read_bandwidth_is_a_positive_finite_rate():
    rate = read_bandwidth(32 << 20, reps=1)
    assert math.isfinite(rate) and 0.1 < rate < 10_000


def test_int8_gemm_roof():
    w = q8_0_weights(64, 256, np.random.default_rng(1))
    assert w.shape == (64, 8 * 34)
    vals = dequantize(w, Q.Q8_0, (64, 256))
    assert np.isfinite(vals).all() and 0 < np.abs(vals).max() <= 127 * 0.0101
    rate = int8_gemm_gop_s(n=256, k=256, m=64, reps=2)
    assert math.isfinite(rate) and rate > 0


LIMITS = MachineLimits(read_gb_s=10.0, sgemm_gflop_s=50.0, int8_gop_s=80.0)


def _phase(gb_s, gflop_s, test="tg8"):
    # 8 tokens in 1 s: bytes_total / flops_total give the rates asked for
    return _summarize(test, 8, [1.0], gb_s * 1e9, gflop_s * 1e9, LIMITS)


def test_bound_below_the_probes():
    r = _phase(5.0, 4.0)
    assert r.weight_gb_s == 5.0 and r.gflop_s == 4.0
    assert r.bound == "memory (50% of peak)"
    # the compute fraction is taken against max(sgemm, int8) = 80, not sgemm's 50
    r = _phase(1.0, 40.0, "pp32")
    assert r.bound == "compute (50% of peak)"


def test_bound_capped_when_a_phase_beats_the_probe():
    r = _phase(20.0, 4.0)  # reads twice what the probe measured
    assert r.bound == "memory (100% of peak; probe below measured)"
    r = _phase(1.0, 160.0, "pp32")
    assert r.bound == "compute (100% of peak; sgemm and int8 probes below measured)"


def test_roofs_come_from_the_whole_run():
    tg, pp = _phase(20.0, 4.0, "tg8"), _phase(15.0, 16.0, "pp32")
    results = [pp, tg]
    apply_roofline(results, LIMITS)
    assert tg.bound == "memory (100% of peak; probe below measured)"
    assert pp.bound == "memory (75% of peak; probe below measured)"  # 15 of tg's 20, not 150% of 10
    roofs = roofline(results, LIMITS)
    assert roofs == {"read_gb_s": 20.0, "read_from": "tg8", "compute_gop_s": 80.0, "compute_from": "int8"}
    for r in results:
        pct = int(r.bound.split("(")[1].split("%")[0])
        assert pct <= 100


def test_format_report_names_the_int8_roof():
    results = [_phase(20.0, 4.0, "tg8")]
    apply_roofline(results, LIMITS)
    from dataclasses import asdict

    report = {"model": "m.gguf", "threads": 2, "threading_layer": "omp", "kernels": "avx2",
              "machine": asdict(MachineLimits(12.5, 55.0, 123.4)),
              "roofline": roofline(results, MachineLimits(12.5, 55.0, 123.4)),
              "results": [asdict(r) for r in results]}
    text = format_report(report)
    machine_line = next(line for line in text.splitlines() if line.startswith("threads:"))
    assert "12.5 GB/s read" in machine_line and "55 GFLOP/s sgemm" in machine_line
    assert "123 GOP/s int8" in machine_line
    assert "memory 20.0 GB/s (from tg8)" in text  # the probe's 12.5 was raised by tg8
    assert "probe below measured" in text
    assert isinstance(results[0], PhaseResult)
