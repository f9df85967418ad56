"""Utilities: voxelization and batching."""

from .quantize import Quantized, sparse_collate, sparse_quantize

__all__ = ["Quantized", "sparse_collate", "sparse_quantize"]
