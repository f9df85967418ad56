"""Triton kernels for torchsparse_lite (installed as ``torchsparse_lite.kernels``).

* :func:`run_plan` — fused gather-GEMM-scatter sparse conv with autograd,
  executing an execution plan in an atomic or output-stationary dataflow;
  :func:`sparse_conv_triton` plans from explicit arguments and runs it.
* :class:`TritonHashIndex`, :class:`TritonSortIndex` — coordinate indexes
  (open-addressing hash table / sorted keys + binary search) built and
  queried by Triton kernels, for kernel-map building on the GPU.
* :mod:`.aot` — record the launches the wrappers make (no GPU needed) and
  compile them for sm_80 / sm_90 with ``ptxas``'s register and spill report.
* :func:`on_device` — every launch runs under its tensors' device and stream.
"""

from torchsparse_lite.config import DATAFLOWS

from .conv import (
    LaunchData,
    TritonConvFunction,
    launch_data,
    launch_groups,
    plan_tiles,
    run_plan,
    sparse_conv_triton,
    triton_work,
)
from .device import on_device
from .hash_index import TritonHashIndex
from .sort_index import TritonSortIndex, make_triton_index
from .tiles import TileConfig, default_tiles, precision_name

__all__ = [
    "DATAFLOWS",
    "TileConfig",
    "TritonConvFunction",
    "LaunchData",
    "TritonHashIndex",
    "TritonSortIndex",
    "default_tiles",
    "launch_data",
    "launch_groups",
    "make_triton_index",
    "on_device",
    "plan_tiles",
    "precision_name",
    "run_plan",
    "sparse_conv_triton",
    "triton_work",
]
