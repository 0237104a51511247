"""The weight-format table of the compiled forward: which kernel a matrix type runs.

`project(mask, fns, code, raw, x, acts, fresh, out, n_threads)` is callable from
numba code only. It reaches the kernels through the address table fns
(kernels.by_address), so its caller's compile does not link their code. `mask`
must be a compile-time literal (the caller passes it
through `numba.literally`): it names the weight types a model has, as bits over
`TABLE_CODES`, and the dispatch compiled for it has a branch for those types and
no other. So a Q4_1 model compiles the Q4_1 and Q8_0 kernels, not all seven:
a cold start compiles what the model needs.

Every code goes to exactly one kernel, from the same tables `linear` uses
(dispatch.KERNELS, FLOAT_CODES, and the generic dequantizing kernel for the
rest); a code outside the mask raises instead of running another format.
"""

from __future__ import annotations

import localllm._numba_setup  # noqa: F401

import numba
from numba import types
from numba.extending import overload

from localllm.kernels import PAR_ROWS
from localllm.kernels.by_address import by_address
from localllm.quant.dequant import ROW_KERNELS
from localllm.quant.dispatch import FLOAT_CODES, KERNELS
from localllm.quant.formats import FORMATS
from localllm.quant.gemm_tiles import row_tiles
from localllm.quant.matmul_float import mm_float
from localllm.quant.matmul_generic import mm_generic
from localllm.quant.q8act import ACT_FORMAT, quantize_activations, quantize_activations_par

TABLE_CODES = tuple(sorted(f.code for f in FORMATS.values()))  # bit i of a mask <-> TABLE_CODES[i]


def format_mask(codes) -> int:
    """The mask naming these weight type codes (each must be a supported format)."""
    mask = 0
    for c in set(int(c) for c in codes):
        mask |= 1 << TABLE_CODES.index(c)
    return mask


_ENTRIES: dict = {}


def call_with_mask(dispatcher, mask: int, *args):
    """dispatcher(mask, *args) for a kernel whose first argument must be a literal (it calls
    `numba.literally(mask)`), without numba's per-call cost for literal arguments.

    From Python numba types the int as int64 first, finds no such specialization, and
    re-enters its compiler to learn that the argument must be literal: measured, 5.8 ms
    per call of a tiny function, longer for the forward pass. The first call per (mask,
    argument types) goes that way and compiles or loads the specialization; later calls
    use its entry point directly (0.2 us).
    """
    key = (dispatcher, mask, tuple(numba.typeof(a) for a in args))
    entry = _ENTRIES.get(key)
    if entry is not None:
        return entry(mask, *args)
    result = dispatcher(mask, *args)
    cres = dispatcher.overloads.get((types.literal(mask),) + key[2])
    if cres is not None:
        _ENTRIES[key] = cres.entry_point
    return result


def _branch(code: int, i: int) -> list[str]:
    """Source lines of one format's branch; its kernel is the global k{i}."""
    if code in KERNELS:
        kind = ACT_FORMAT[code]
        return [
            f"    if code == {code}:",
            f"        xq, xd, xm, xs = _acts(acts, {kind}, M, K)",
            f"        if fresh[{kind}] == 0:",  # Q/K/V (gate/up) share one quantization
            f"            if M >= {PAR_ROWS}:",
            f"                quantize_par(fns, x, {kind}, xq, xd, xm, xs)",
            "            else:",
            f"                quantize(fns, x, {kind}, xq, xd, xm, xs)",
            f"            fresh[{kind}] = 1",
            f"        k{i}(fns, raw, xq, xd, xm, xs, out, row_tiles(N, M, n_threads))",
            "        return",
        ]
    kernel = "mm_float" if code in FLOAT_CODES else "mm_generic"
    return [f"    if code == {code}:", f"        {kernel}(fns, raw, code, x, out, max(1, min(N, 4 * n_threads)))",
            "        return"]


def project(mask, fns, code, raw, x, acts, fresh, out, n_threads):
    """out (M, N) = x (M, K) @ W.T for the matrix raw (N, row_bytes) of type `code`.

    fns: the address table (kernels.by_address) holding the kernels of the mask's formats.
    acts: (codes (3, M*K) int8, scales, scale * sums (3, M*K/32) f32, sums int32),
    scratch per activation format; fresh (3,) int64: set to 1 once format k holds x's
    codes, cleared by the caller whenever x changes.
    """
    raise NotImplementedError  # only callable from numba-compiled code


@overload(project)
def _project_impl(mask, fns, code, raw, x, acts, fresh, out, n_threads):
    if not isinstance(mask, types.IntegerLiteral):
        return None  # numba retries with the literal value
    m = mask.literal_value
    ns = {"row_tiles": row_tiles, "mm_float": by_address(mm_float), "mm_generic": by_address(mm_generic),
          "_acts": _acts, "quantize": by_address(quantize_activations, literal=(1,)),
          "quantize_par": by_address(quantize_activations_par, literal=(1,))}
    lines = ["def impl(mask, fns, code, raw, x, acts, fresh, out, n_threads):",
             "    N, M, K = raw.shape[0], x.shape[0], x.shape[1]"]
    for i, c in enumerate(TABLE_CODES):
        if m >> i & 1:
            if c in KERNELS:
                ns[f"k{i}"] = by_address(KERNELS[c])
            lines += _branch(c, i)
    lines.append("    raise ValueError('weight type outside the model format mask')")
    exec("\n".join(lines), ns)  # noqa: S102  (source built above from the format table only)
    return ns["impl"]


def dequant_masked(mask, fns, code, src, dst):
    """dequant.dequant_row for the types in the literal mask only (the embedding's row), its
    kernels reached through the address table fns."""
    raise NotImplementedError  # only callable from numba-compiled code


@overload(dequant_masked)
def _dequant_masked_impl(mask, fns, code, src, dst):
    if not isinstance(mask, types.IntegerLiteral):
        return None
    m = mask.literal_value
    ns, lines = {}, ["def impl(mask, fns, code, src, dst):"]
    for i, c in enumerate(TABLE_CODES):
        if m >> i & 1:
            ns[f"r{i}"] = by_address(ROW_KERNELS[c])
            lines += [f"    if code == {c}:", f"        r{i}(fns, src, dst)", "        return"]
    lines.append("    raise ValueError('weight type outside the model format mask')")
    exec("\n".join(lines), ns)  # noqa: S102  (source built above from the format table only)
    return ns["impl"]


def _acts(acts, kind, M, K):
    raise NotImplementedError  # only callable from numba-compiled code


@overload(_acts, inline="always")
def _acts_impl(acts, kind, M, K):
    def impl(acts, kind, M, K):
        xq_all, xd_all, xm_all, xs_all = acts
        nb = K // 32
        return (xq_all[kind, : M * K].reshape((M, K)),  # (M, K) int8 codes
                xd_all[kind, : M * nb].reshape((M, nb)),  # (M, K/32) block scales
                xm_all[kind, : M * nb].reshape((M, nb)),  # (M, K/32) scale * code sums
                xs_all[kind, : M * nb].reshape((M, nb)))  # (M, K/32) code sums
    return impl
