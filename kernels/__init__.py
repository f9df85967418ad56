"""Triton kernels for torchsparse_lite (installed as ``torchsparse_lite.kernels``).

* :func:`sparse_conv_triton` — fused gather-GEMM-scatter sparse conv with
  autograd, executing a grouping plan in an atomic or output-stationary dataflow.
* :class:`TritonHashIndex`, :class:`TritonSortIndex` — coordinate indexes
  (open-addressing hash table / sorted keys + binary search) built and
  queried by Triton kernels, for kernel-map building on the GPU.
* :mod:`.aot` — record the launches the wrappers make (no GPU needed) and
  compile them for sm_80 / sm_90 with ``ptxas``'s register and spill report.
* :func:`on_device` — every launch runs under its tensors' device and stream.
"""

from .conv import (
    DATAFLOWS,
    TritonConvFunction,
    launch_groups,
    resolve_dataflow,
    resolve_tf32,
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
    "TritonHashIndex",
    "TritonSortIndex",
    "default_tiles",
    "launch_groups",
    "make_triton_index",
    "on_device",
    "precision_name",
    "resolve_dataflow",
    "resolve_tf32",
    "sparse_conv_triton",
    "triton_work",
]
