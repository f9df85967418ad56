"""MinkowskiEngine 0.5.4's Python API on the native engine (3D only).

Use it as ``import torchsparse_lite.compat.minkowski as ME``, or call
:func:`install` so that ``import MinkowskiEngine as ME`` finds it. Every conv
is one native :class:`~torchsparse_lite.kmap.geometry.ConvGeometry` whose map
comes from the coordinate manager's native map cache and runs through
:func:`~torchsparse_lite.functional.conv.sparse_conv`. See
``docs/migrating_minkowski.md`` for what is supported and how it differs.
"""

from __future__ import annotations

import torch

from . import functional as MinkowskiFunctional
from . import modules, utils
from . import ops as MinkowskiOps
from .conv import (
    MinkowskiChannelwiseConvolution,
    MinkowskiConvolution,
    MinkowskiConvolutionBase,
    MinkowskiConvolutionTranspose,
    MinkowskiGenerativeConvolutionTranspose,
)
from .enums import (
    BroadcastMode,
    ConvolutionMode,
    CoordinateMapType,
    GPUMemoryAllocatorType,
    MinkowskiAlgorithm,
    PoolingMode,
    RegionType,
    SparseTensorOperationMode,
    SparseTensorQuantizationMode,
)
from .install import Installation, install, uninstall
from .kernel import KernelGenerator, get_kernel_volume
from .layers import (
    NONLINEARITIES,
    MinkowskiAlphaDropout,
    MinkowskiBatchNorm,
    MinkowskiCELU,
    MinkowskiDropout,
    MinkowskiELU,
    MinkowskiGELU,
    MinkowskiHardshrink,
    MinkowskiHardsigmoid,
    MinkowskiHardswish,
    MinkowskiHardtanh,
    MinkowskiInstanceNorm,
    MinkowskiLeakyReLU,
    MinkowskiLinear,
    MinkowskiLogSigmoid,
    MinkowskiLogSoftmax,
    MinkowskiModuleBase,
    MinkowskiNetwork,
    MinkowskiNonlinearityBase,
    MinkowskiPReLU,
    MinkowskiReLU,
    MinkowskiReLU6,
    MinkowskiRReLU,
    MinkowskiSELU,
    MinkowskiSigmoid,
    MinkowskiSiLU,
    MinkowskiSoftmax,
    MinkowskiSoftmin,
    MinkowskiSoftplus,
    MinkowskiSoftshrink,
    MinkowskiSoftsign,
    MinkowskiSyncBatchNorm,
    MinkowskiTanh,
    MinkowskiTanhshrink,
    MinkowskiThreshold,
)
from .manager import (
    CoordinateManager,
    CoordinateMapKey,
    clear_global_coordinate_manager,
    global_coordinate_manager,
    set_global_coordinate_manager,
    set_sparse_tensor_operation_mode,
    sparse_tensor_operation_mode,
)
from .ops import (
    MinkowskiStackCat,
    MinkowskiStackMean,
    MinkowskiStackSum,
    MinkowskiStackVar,
    MinkowskiToDenseTensor,
    MinkowskiToFeature,
    MinkowskiToSparseTensor,
    cat,
    dense_coordinates,
    mean,
    to_sparse,
    to_sparse_all,
    var,
)
from .ops import _sum as sum  # ME exports its feature sum as ``ME.sum``
from .pooling import (
    MinkowskiAvgPooling,
    MinkowskiGlobalAvgPooling,
    MinkowskiGlobalMaxPooling,
    MinkowskiGlobalPooling,
    MinkowskiGlobalSumPooling,
    MinkowskiMaxPooling,
    MinkowskiPoolingTranspose,
    MinkowskiSumPooling,
)
from .tensor import SparseTensor

__version__ = "0.5.4"


class TensorField:
    """ME's continuous-coordinate tensor: not supported (raises on construction)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(
            "TensorField (continuous coordinates, slicing) is not supported by torchsparse_lite's MinkowskiEngine "
            "layer; quantize with MinkowskiEngine.utils.sparse_quantize and build a SparseTensor"
        )


def is_cuda_available() -> bool:
    return torch.cuda.is_available()


def set_gpu_allocator(backend: GPUMemoryAllocatorType) -> None:
    """Accepted for compatibility; the native engine uses PyTorch's allocator."""
    if not isinstance(backend, GPUMemoryAllocatorType):
        raise TypeError(f"backend must be a GPUMemoryAllocatorType, got {backend!r}")


set_memory_manager_backend = set_gpu_allocator

__all__ = [
    "NONLINEARITIES",
    "BroadcastMode",
    "ConvolutionMode",
    "CoordinateManager",
    "CoordinateMapKey",
    "CoordinateMapType",
    "GPUMemoryAllocatorType",
    "Installation",
    "KernelGenerator",
    "MinkowskiAlgorithm",
    "MinkowskiAlphaDropout",
    "MinkowskiAvgPooling",
    "MinkowskiBatchNorm",
    "MinkowskiCELU",
    "MinkowskiChannelwiseConvolution",
    "MinkowskiConvolution",
    "MinkowskiConvolutionBase",
    "MinkowskiConvolutionTranspose",
    "MinkowskiDropout",
    "MinkowskiELU",
    "MinkowskiFunctional",
    "MinkowskiGELU",
    "MinkowskiGenerativeConvolutionTranspose",
    "MinkowskiGlobalAvgPooling",
    "MinkowskiGlobalMaxPooling",
    "MinkowskiGlobalPooling",
    "MinkowskiGlobalSumPooling",
    "MinkowskiHardshrink",
    "MinkowskiHardsigmoid",
    "MinkowskiHardswish",
    "MinkowskiHardtanh",
    "MinkowskiInstanceNorm",
    "MinkowskiLeakyReLU",
    "MinkowskiLinear",
    "MinkowskiLogSigmoid",
    "MinkowskiLogSoftmax",
    "MinkowskiMaxPooling",
    "MinkowskiModuleBase",
    "MinkowskiNetwork",
    "MinkowskiNonlinearityBase",
    "MinkowskiOps",
    "MinkowskiPReLU",
    "MinkowskiPoolingTranspose",
    "MinkowskiReLU",
    "MinkowskiReLU6",
    "MinkowskiRReLU",
    "MinkowskiSELU",
    "MinkowskiSiLU",
    "MinkowskiSigmoid",
    "MinkowskiSoftmax",
    "MinkowskiSoftmin",
    "MinkowskiSoftplus",
    "MinkowskiSoftshrink",
    "MinkowskiSoftsign",
    "MinkowskiStackCat",
    "MinkowskiStackMean",
    "MinkowskiStackSum",
    "MinkowskiStackVar",
    "MinkowskiSumPooling",
    "MinkowskiSyncBatchNorm",
    "MinkowskiTanh",
    "MinkowskiTanhshrink",
    "MinkowskiThreshold",
    "MinkowskiToDenseTensor",
    "MinkowskiToFeature",
    "MinkowskiToSparseTensor",
    "PoolingMode",
    "RegionType",
    "SparseTensor",
    "SparseTensorOperationMode",
    "SparseTensorQuantizationMode",
    "TensorField",
    "cat",
    "clear_global_coordinate_manager",
    "dense_coordinates",
    "get_kernel_volume",
    "global_coordinate_manager",
    "install",
    "is_cuda_available",
    "mean",
    "modules",
    "set_global_coordinate_manager",
    "set_gpu_allocator",
    "set_memory_manager_backend",
    "set_sparse_tensor_operation_mode",
    "sparse_tensor_operation_mode",
    "sum",
    "to_sparse",
    "to_sparse_all",
    "uninstall",
    "utils",
    "var",
]
