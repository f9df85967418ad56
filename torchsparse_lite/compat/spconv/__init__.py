"""spconv 2.x's ``spconv.pytorch`` API on torchsparse_lite's engine.

Swap ``import spconv.pytorch as spconv`` for
``import torchsparse_lite.compat.spconv as spconv`` (or call
:func:`install` once, before the model code imports spconv) and spconv model
code runs unmodified: ``SparseConvTensor``, ``SubMConv3d``/``SparseConv3d``/
``SparseConvTranspose3d``/``SparseInverseConv3d`` (and the 1-D/2-D variants),
pools, ``SparseSequential``, ``SparseModule``, ``ToDense``, the tables,
``functional.sparse_add`` and ``utils.PointToVoxel``, with spconv's weight
layout and ``state_dict`` keys. See ``docs/migrating.md`` (spconv section) for
what is supported, what raises, and where behaviour differs.
"""

from . import functional, utils
from .conv import (
    SparseConv1d,
    SparseConv2d,
    SparseConv3d,
    SparseConv4d,
    SparseConvolution,
    SparseConvTranspose1d,
    SparseConvTranspose2d,
    SparseConvTranspose3d,
    SparseConvTranspose4d,
    SparseInverseConv1d,
    SparseInverseConv2d,
    SparseInverseConv3d,
    SparseInverseConv4d,
    SubMConv1d,
    SubMConv2d,
    SubMConv3d,
    SubMConv4d,
)
from .install import Installation, install, installed, uninstall
from .modules import (
    ConvAlgo,
    Identity,
    RemoveGrid,
    SparseBatchNorm,
    SparseIdentity,
    SparseModule,
    SparseReLU,
    SparseSequential,
    SparseSyncBatchNorm,
    ToDense,
    assign_name_for_sparse_modules,
)
from .pool import (
    SparseAvgPool1d,
    SparseAvgPool2d,
    SparseAvgPool3d,
    SparseGlobalAvgPool,
    SparseGlobalMaxPool,
    SparseMaxPool1d,
    SparseMaxPool2d,
    SparseMaxPool3d,
    SparseMaxPool4d,
)
from .tables import AddTable, AddTableMisaligned, ConcatTable, JoinTable
from .tensor import SparseConvTensor

__all__ = [
    "AddTable",
    "AddTableMisaligned",
    "ConcatTable",
    "ConvAlgo",
    "Identity",
    "Installation",
    "JoinTable",
    "RemoveGrid",
    "SparseAvgPool1d",
    "SparseAvgPool2d",
    "SparseAvgPool3d",
    "SparseBatchNorm",
    "SparseConv1d",
    "SparseConv2d",
    "SparseConv3d",
    "SparseConv4d",
    "SparseConvTensor",
    "SparseConvTranspose1d",
    "SparseConvTranspose2d",
    "SparseConvTranspose3d",
    "SparseConvTranspose4d",
    "SparseConvolution",
    "SparseGlobalAvgPool",
    "SparseGlobalMaxPool",
    "SparseIdentity",
    "SparseInverseConv1d",
    "SparseInverseConv2d",
    "SparseInverseConv3d",
    "SparseInverseConv4d",
    "SparseMaxPool1d",
    "SparseMaxPool2d",
    "SparseMaxPool3d",
    "SparseMaxPool4d",
    "SparseModule",
    "SparseReLU",
    "SparseSequential",
    "SparseSyncBatchNorm",
    "SubMConv1d",
    "SubMConv2d",
    "SubMConv3d",
    "SubMConv4d",
    "ToDense",
    "assign_name_for_sparse_modules",
    "functional",
    "install",
    "installed",
    "uninstall",
    "utils",
]
