"""Which matmul kernels this process runs: 'avx512', 'avx2' or 'portable'.

Chosen once, at import, from the CPU's features and LOCALLLM_KERNELS:
  avx512    AVX-512 F/BW/VL with VNNI (vpdpbusd on 512-bit registers)
  avx2      AVX2 + FMA + F16C (vpmaddubsw / vpmaddwd on 256-bit registers)
  portable  plain numba loops over dequantized rows, any CPU
The best path the CPU has is the default. LOCALLLM_KERNELS forces one, so the
tests can run every path a CPU allows; asking for a path the CPU lacks is an
error, not a silent fallback. LOCALLLM_PORTABLE=1 (older spelling) means portable.

This module imports no numba, so `_numba_setup` can key the compiled-kernel
cache by the path: a cached kernel built for one path never serves another.
"""

from __future__ import annotations

import os

from .errors import LocalLLMError

PATHS = ("avx512", "avx2", "portable")


def cpu_features() -> dict:
    from llvmlite import binding

    return dict(binding.get_host_cpu_features())


def available_paths(feats: dict | None = None) -> list[str]:
    """The paths this CPU can run, best first."""
    f = cpu_features() if feats is None else feats
    out = []
    if all(f.get(k, False) for k in ("avx512f", "avx512bw", "avx512vl", "avx512vnni", "fma", "f16c")):
        out.append("avx512")
    if all(f.get(k, False) for k in ("avx2", "fma", "f16c")):
        out.append("avx2")
    out.append("portable")
    return out


def choose_path(env: dict | None = None, feats: dict | None = None) -> str:
    env = os.environ if env is None else env
    allowed = available_paths(feats)
    asked = env.get("LOCALLLM_KERNELS", "").strip().lower()
    if not asked and env.get("LOCALLLM_PORTABLE", "") in ("1", "true", "yes"):
        asked = "portable"
    if not asked:
        return allowed[0]
    if asked not in PATHS:
        raise LocalLLMError(f"LOCALLLM_KERNELS={asked!r} is not a kernel path (choose from {', '.join(PATHS)})")
    if asked not in allowed:
        raise LocalLLMError(f"LOCALLLM_KERNELS={asked} needs CPU features this machine lacks "
                           f"(it can run: {', '.join(allowed)})")
    return asked


KERNEL_PATH = choose_path()
USE_X86 = KERNEL_PATH in ("avx2", "avx512")  # the x86 SIMD kernels (integer dots, float FMAs) run
