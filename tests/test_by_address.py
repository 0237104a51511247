"""kernels.by_address: a compiled caller reaches a kernel through a table of addresses."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from numba import njit

from localllm.kernels.by_address import address_table, by_address


@njit
def _scale_into(x, k, out):
    for i in range(x.shape[0]):
        out[i] = x[i] * k
    if x.shape[0] == 3:
        raise ValueError("three rows")


@njit
def _returns_a_value(x):
    return x.sum()


_scale_stub = by_address(_scale_into)


@njit
def _caller(fns, x, out):
    _scale_stub(fns, x, np.float32(2.0), out)
    return out.sum()


def _table():
    f32 = numba.typeof(np.zeros(1, np.float32))
    return address_table([(_scale_into, (f32, numba.float32, f32))])


def test_a_call_by_address_runs_the_kernel():
    x = np.arange(5, dtype=np.float32)
    out = np.zeros_like(x)
    assert _caller(_table(), x, out) == 2 * x.sum()
    np.testing.assert_array_equal(out, 2 * x)


def test_the_kernels_exception_reaches_the_caller():
    x = np.arange(3, dtype=np.float32)
    with pytest.raises(ValueError, match="three rows"):
        _caller(_table(), x, np.zeros_like(x))


def test_a_table_without_the_kernel_raises_instead_of_jumping():
    x = np.arange(5, dtype=np.float32)
    with pytest.raises(RuntimeError, match="lacks a kernel"):
        _caller(np.zeros_like(_table()), x, np.zeros_like(x))
    f64 = numba.typeof(np.zeros(1))  # the kernel compiled for other argument types
    other = address_table([(_scale_into, (f64, numba.float64, f64))])
    with pytest.raises(RuntimeError, match="lacks a kernel"):
        _caller(other, x, np.zeros_like(x))


def test_a_kernel_that_returns_a_value_is_refused():
    with pytest.raises(TypeError, match="returns a value"):
        address_table([(_returns_a_value, (numba.typeof(np.zeros(1)),))])


def test_callers_compiled_by_separate_processes_keep_their_kernels(tmp_path):
    # numba names compiled code by qualname, argument types and a counter that restarts in every
    # process: two stubs compiled by two fresh processes must not share a name in the cache
    script = str(Path(__file__).with_name("by_address_pair.py"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    for caller in ("a", "b"):
        subprocess.run([sys.executable, script, "compile", caller], env=env, check=True, timeout=600)
    run = subprocess.run([sys.executable, script, "run"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout) == 3.0  # add_one then add_two, not one of them twice
