"""Triton kernels for torchsparse_lite (installed as ``torchsparse_lite.kernels``).

* :func:`sparse_conv_triton` — fused gather-GEMM-scatter sparse conv with
  autograd, executing a grouping plan in an atomic or output-stationary dataflow.
* :class:`TritonHashIndex`, :class:`TritonSortIndex` — coordinate indexes
  (open-addressing hash table / sorted keys + binary search) built and
  queried by Triton kernels, for kernel-map building on the GPU.
"""

from .conv import DATAFLOWS, TritonConvFunction, launch_groups, resolve_dataflow, sparse_conv_triton, triton_work
from .hash_index import TritonHashIndex
from .sort_index import TritonSortIndex, make_triton_index
from .tiles import TileConfig, default_tiles

__all__ = [
    "DATAFLOWS",
    "TileConfig",
    "TritonConvFunction",
    "TritonHashIndex",
    "TritonSortIndex",
    "default_tiles",
    "launch_groups",
    "make_triton_index",
    "resolve_dataflow",
    "sparse_conv_triton",
    "triton_work",
]
