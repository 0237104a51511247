"""GGUF weight formats and the matmul kernels that read them in place."""

from localllm.quant.dispatch import QuantTensor, dequantize, kernel_path, linear
from localllm.quant.formats import FORMATS, SUPPORTED_TYPES, UnsupportedQuantType

__all__ = ["QuantTensor", "linear", "dequantize", "SUPPORTED_TYPES", "UnsupportedQuantType", "FORMATS", "kernel_path"]
