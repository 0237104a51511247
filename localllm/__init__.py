"""localllm: run GGUF language models locally on the CPU.

    from localllm import LLM
    llm = LLM("smollm2-135m")
    print(llm.generate("The capital of France is", max_tokens=16, temperature=0).text)

`LLM` and `SamplingParams` are imported lazily, so `import localllm` stays fast
and light for tools that only need the loader or the hub.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# Before numpy loads OpenBLAS (it reads this once, at load): after each sgemm its
# worker threads spin for ~2^28 cycles by default, and on a small machine they take
# the cores from the numba kernels that run between two sgemms. With 2^4 they sleep
# at once. Measured on 2 cores: SmolLM2 pp512 1.14 -> 0.85 s, attention after an
# sgemm 0.35 -> 0.23 s. (A program that imported numpy before localllm keeps its
# own setting; set OPENBLAS_THREAD_TIMEOUT=4 yourself there.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

try:
    __version__ = version("localllm")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["LLM", "SamplingParams", "Completion", "__version__"]


def __getattr__(name):
    if name == "LLM":
        from .api import LLM

        return LLM
    if name == "SamplingParams":
        from .sampling import SamplingParams

        return SamplingParams
    if name == "Completion":
        from .generation import Completion

        return Completion
    raise AttributeError(f"module 'localllm' has no attribute {name!r}")
