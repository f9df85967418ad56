"""Functional sparse convolution: ``sparse_conv`` plans once and runs the PyTorch or Triton path."""

from .conv import SparseConvFunction, check_conv_inputs, execute, sparse_conv
from .plan import ExecutionSettings, plan_execution, resolve_settings

__all__ = [
    "ExecutionSettings",
    "SparseConvFunction",
    "check_conv_inputs",
    "execute",
    "plan_execution",
    "resolve_settings",
    "sparse_conv",
]
