"""Functional ops (autograd functions and their dispatch)."""

from .conv import SparseConvFunction, gather_gemm_scatter, sparse_conv

__all__ = ["SparseConvFunction", "gather_gemm_scatter", "sparse_conv"]
