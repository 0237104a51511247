"""Numba kernels for the non-matmul parts of a transformer (they know nothing about models), and
the address-table calls (by_address) through which the forward pass reaches every kernel."""

# Rows from which a row-wise kernel (norms, RoPE, activation quantization) is spread over
# threads: below it one parallel launch costs more than the rows themselves.
PAR_ROWS = 8
