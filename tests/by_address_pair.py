"""Two kernels of one signature, each called by address from its own cached caller
(test_by_address compiles each caller in a fresh process, then runs both in a third).

Usage: python by_address_pair.py compile a|b, or python by_address_pair.py run."""

import sys

import numba
import numpy as np
from numba import njit

from localllm.kernels.by_address import address_table, by_address


@njit(cache=True)
def add_one(x):
    x += 1.0


@njit(cache=True)
def add_two(x):
    x += 2.0


_add_one, _add_two = by_address(add_one), by_address(add_two)


@njit(cache=True)
def call_a(fns, x):
    _add_one(fns, x)


@njit(cache=True)
def call_b(fns, x):
    _add_two(fns, x)


if __name__ == "__main__":
    x = np.zeros(4)
    sig = (numba.typeof(x),)
    if sys.argv[1] == "compile":  # the caller is this fresh process's first compile
        (call_a if sys.argv[2] == "a" else call_b).compile((numba.typeof(np.zeros((1, 2), np.int64)), *sig))
    else:
        fns = address_table([(add_one, sig), (add_two, sig)])
        call_a(fns, x)
        call_b(fns, x)
        print(x[0])
