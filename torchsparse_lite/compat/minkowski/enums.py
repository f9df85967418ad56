"""MinkowskiEngine's enums, with the member names and values of ME 0.5.4 (``src/types.hpp``).

Only what changes results matters to this layer: ``RegionType`` (only
``HYPER_CUBE`` is supported), ``PoolingMode`` (sum / average / max) and
``SparseTensorQuantizationMode``. The others (algorithm, allocator, map type,
convolution mode) choose implementations in ME and are accepted and ignored.
"""

from __future__ import annotations

from enum import Enum


class RegionType(Enum):
    """Kernel shape. ``HYPER_CUBE`` is the ``kernel_size`` box; the others are not supported."""

    HYPER_CUBE = 0
    HYPER_CROSS = 1
    CUSTOM = 2


class PoolingMode(Enum):
    """Reduction of the local and global pooling layers."""

    LOCAL_SUM_POOLING = 0
    LOCAL_AVG_POOLING = 1
    LOCAL_MAX_POOLING = 2
    GLOBAL_SUM_POOLING_DEFAULT = 3
    GLOBAL_AVG_POOLING_DEFAULT = 4
    GLOBAL_MAX_POOLING_DEFAULT = 5
    GLOBAL_SUM_POOLING_KERNEL = 6
    GLOBAL_AVG_POOLING_KERNEL = 7
    GLOBAL_MAX_POOLING_KERNEL = 8
    GLOBAL_SUM_POOLING_PYTORCH_INDEX = 9
    GLOBAL_AVG_POOLING_PYTORCH_INDEX = 10
    GLOBAL_MAX_POOLING_PYTORCH_INDEX = 11


class ConvolutionMode(Enum):
    """ME's GEMM strategy; every mode computes the same result here."""

    DEFAULT = 0
    DIRECT_GEMM = 1
    COPY_GEMM = 2


class BroadcastMode(Enum):
    ELEMENTWISE_ADDITON = 0  # ME's spelling
    ELEMENTWISE_MULTIPLICATION = 1


class MinkowskiAlgorithm(Enum):
    DEFAULT = 0
    MEMORY_EFFICIENT = 1
    SPEED_OPTIMIZED = 2


class CoordinateMapType(Enum):
    CPU = 0
    CUDA = 1


class GPUMemoryAllocatorType(Enum):
    PYTORCH = 0
    CUDA = 1


class SparseTensorOperationMode(Enum):
    """Whether new tensors get their own coordinate manager or share the global one."""

    SEPARATE_COORDINATE_MANAGER = 0
    SHARE_COORDINATE_MANAGER = 1


class SparseTensorQuantizationMode(Enum):
    """How features of duplicate coordinates are merged when a SparseTensor is built.

    ``RANDOM_SUBSAMPLE`` keeps the first occurrence (what ME's CPU map does),
    ``UNWEIGHTED_AVERAGE``/``UNWEIGHTED_SUM`` average/sum them, ``MAX_POOL``
    takes the channel-wise max, ``NO_QUANTIZATION`` requires unique
    coordinates. ``SPLAT_LINEAR_INTERPOLATION`` (a TensorField feature) is not
    supported.
    """

    RANDOM_SUBSAMPLE = 0
    UNWEIGHTED_AVERAGE = 1
    UNWEIGHTED_SUM = 2
    NO_QUANTIZATION = 3
    MAX_POOL = 4
    SPLAT_LINEAR_INTERPOLATION = 5
