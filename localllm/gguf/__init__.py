"""Reading and validating GGUF files as zero-copy views over one np.memmap."""

from .reader import GGUFFile, TensorInfo, open_gguf, read_metadata

__all__ = ["GGUFFile", "TensorInfo", "open_gguf", "read_metadata"]
