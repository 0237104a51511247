"""Numba kernels for the non-matmul parts of a transformer. They know nothing about models."""
