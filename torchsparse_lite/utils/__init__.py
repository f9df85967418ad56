"""Utilities: voxelization and batching (``quantize``), and the timing primitives (``timing``)."""

from .quantize import Quantized, sparse_collate, sparse_quantize

__all__ = ["Quantized", "sparse_collate", "sparse_quantize"]
