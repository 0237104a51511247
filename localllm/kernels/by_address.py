"""Calls from one compiled function to another through a table of addresses.

When a numba function calls another, numba links the callee's LLVM module into
the caller's and optimizes and emits the whole again. The forward pass calls
every leaf kernel of a model, so from an empty cache it spent about 25 s of a
Gemma 3 cold start (2 cores) redoing work that the leaves' own compiles had
done, and its cache entry held a second copy of all their machine code.

A stub made by `by_address(kernel)` is called from numba code as
`stub(fns, *args)`: it looks up the kernel's compiled entry for these argument
types in `fns` (made by `address_table`, passed in at run time) and calls it
there, with numba's own calling convention, exceptions included. The caller's
compile then neither compiles nor links the kernel, and its cache entry stays
valid because no address is baked into it. The table's rows are found by a tag
of (kernel, argument types), so a call whose types the table lacks raises
instead of jumping into a function of another signature.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

TABLE_ROWS = 128  # open addressing: the forward pass's ~25 kernels leave most rows free


def call_tag(kernel, argtypes) -> int:
    """A positive int64 naming (kernel, argument types) the same way in every process."""
    f = kernel.py_func
    text = f"{f.__module__}.{f.__qualname__}{tuple(argtypes)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


@njit(cache=True)
def _address(fns, tag):
    """fns (TABLE_ROWS, 2) int64 rows (address, tag): the address stored under tag."""
    n = fns.shape[0]
    i = tag % n
    for _ in range(n):
        if fns[i, 1] == tag:
            return fns[i, 0]
        i = (i + 1) % n
    raise RuntimeError("the kernel address table lacks a kernel this call needs")


def _call_at(argtypes):
    """An intrinsic calling the numba function at an address with arguments of argtypes."""

    @intrinsic
    def call_at(typingctx, addr, args):
        def codegen(context, builder, signature, llargs):
            fnty = context.call_conv.get_function_type(types.none, argtypes)
            fn = builder.inttoptr(llargs[0], fnty.as_pointer())
            values = [builder.extract_value(llargs[1], i) for i in range(len(argtypes))]
            status, _ = context.call_conv.call_function(builder, fn, types.none, argtypes, values)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return context.get_dummy_value()

        return types.none(addr, args), codegen

    return call_at


_STUBS: dict = {}


def by_address(kernel, literal: tuple[int, ...] = ()):
    """A stub for numba code: stub(fns, *args) runs kernel(*args) from the table fns.

    kernel must return nothing. literal: positions of arguments the kernel takes as
    compile-time literals (its entries in the table are compiled with literal types
    there); every other argument is typed as a plain value.
    """
    key = (kernel, literal)
    if key in _STUBS:
        return _STUBS[key]

    def stub(fns, *args):
        raise NotImplementedError  # only callable from numba-compiled code

    @overload(stub, prefer_literal=True)
    def _stub_impl(fns, *args):
        argtypes = tuple(a if i in literal else types.unliteral(a) for i, a in enumerate(args))
        tag = call_tag(kernel, argtypes)
        call_at = _call_at(argtypes)

        def impl(fns, *args):
            call_at(_address(fns, tag), args)

        # numba names a compiled function by its qualname and argument types (plus a counter
        # that restarts in every process). Stubs of two kernels with the same argument types,
        # compiled in two processes, would share a symbol in the cache's machine code, and the
        # second to load would run the first's: so the name carries the kernel's.
        impl.__qualname__ = f"{kernel.py_func.__module__}.{kernel.py_func.__qualname__}".replace(".", "_")
        return impl

    stub.__name__ = stub.__qualname__ = f"{kernel.py_func.__name__}_by_address"
    _STUBS[key] = stub
    return stub


def address_table(work) -> np.ndarray:
    """The table (TABLE_ROWS, 2) int64 of (address, tag) for work [(kernel, argument types)],
    compiling (or loading from the cache) each kernel's entry."""
    work = list(work)
    if len(work) > TABLE_ROWS // 2:
        raise ValueError(f"{len(work)} kernels: raise TABLE_ROWS")
    fns = np.zeros((TABLE_ROWS, 2), np.int64)
    for kernel, sig in work:
        sig = tuple(sig)
        kernel.compile(sig)
        cres = kernel.overloads[sig]
        if cres.signature.return_type != types.none:
            raise TypeError(f"{kernel.py_func.__name__} returns a value: it cannot be called by address")
        tag = call_tag(kernel, sig)
        i = tag % TABLE_ROWS
        while fns[i, 1] not in (0, tag):
            i = (i + 1) % TABLE_ROWS
        fns[i] = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name), tag
    return fns
