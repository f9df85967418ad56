"""``torch.nn``-style modules over :class:`~torchsparse_lite.SparseTensor`."""

from .activation import Dropout, LeakyReLU, Linear, ReLU, SiLU
from .bev import ToBEV, to_bev
from .conv import Conv3d
from .norm import BatchNorm, GroupNorm
from .pooling import GlobalAvgPool, GlobalMaxPool, MaxPool3d, ToDense
from .voxel_drop import VoxelDrop, VoxelRestore

__all__ = [
    "BatchNorm",
    "Conv3d",
    "Dropout",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GroupNorm",
    "LeakyReLU",
    "Linear",
    "MaxPool3d",
    "ReLU",
    "SiLU",
    "ToBEV",
    "ToDense",
    "VoxelDrop",
    "VoxelRestore",
    "to_bev",
]
