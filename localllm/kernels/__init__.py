"""Numba kernels for the non-matmul parts of a transformer. They know nothing about models."""

# Rows from which a row-wise kernel (norms, RoPE, activation quantization) is spread over
# threads: below it one parallel launch costs more than the rows themselves.
PAR_ROWS = 8
