"""localllm: run GGUF language models locally on the CPU.

    from localllm import LLM
    llm = LLM("smollm2-135m")
    print(llm.generate("The capital of France is", max_tokens=16, temperature=0).text)

`LLM` and `SamplingParams` are imported lazily, so `import localllm` stays fast
and light for tools that only need the loader or the hub.
"""

from importlib.metadata import PackageNotFoundError, version

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
