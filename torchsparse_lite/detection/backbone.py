"""SECOND / CenterPoint ``VoxelResBackBone8x``-style sparse 3D backbone, built from torchsparse_lite.nn."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .. import nn as spnn
from ..tensor import SparseTensor


class SparseBasicBlock(nn.Module):
    """Residual block of two 3x3x3 submanifold convs: ``relu(x + bn(conv(relu(bn(conv(x))))))``."""

    identity_shortcut = True  # relu(x + f(x)): block pruning may replace it by nn.Identity

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = spnn.Conv3d(channels, channels, 3)
        self.bn1 = spnn.BatchNorm(channels)
        self.conv2 = spnn.Conv3d(channels, channels, 3)
        self.bn2 = spnn.BatchNorm(channels)
        self.relu = spnn.ReLU()

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


def _conv_bn_relu(cin: int, cout: int, kernel, stride) -> nn.Sequential:
    return nn.Sequential(spnn.Conv3d(cin, cout, kernel, stride), spnn.BatchNorm(cout), spnn.ReLU())


class SparseBackbone8x(nn.Module):
    """Sparse 3D encoder down to stride 8 in x, y (16 in z).

    Stem: submanifold 3x3x3 conv. Stages 2-4 start with a strided k=3 s=2
    sparse conv, every stage has ``blocks[i]`` residual submanifold blocks; a
    final (1, 1, 3) conv with stride (1, 1, 2) thins the height axis as
    SECOND's ``conv_out`` does.

    Args:
        in_channels: voxel feature channels.
        widths: channels of the stages at strides 1, 2, 4, 8.
        blocks: residual blocks per stage.
        out_channels: channels of the output tensor.

    Input: SparseTensor [N, in_channels] at stride 1. Output: SparseTensor
    [M, out_channels] at stride (8, 8, 16).
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (16, 32, 64, 64),
        blocks: Sequence[int] = (1, 1, 1, 1),
        out_channels: int = 64,
    ) -> None:
        super().__init__()
        w = list(widths)
        self.stem = _conv_bn_relu(in_channels, w[0], 3, 1)
        stages = []
        for i in range(4):
            layers: list[nn.Module] = [] if i == 0 else [_conv_bn_relu(w[i - 1], w[i], 3, 2)]
            layers += [SparseBasicBlock(w[i]) for _ in range(blocks[i])]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.conv_out = _conv_bn_relu(w[3], out_channels, (1, 1, 3), (1, 1, 2))
        self.out_channels = out_channels

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(x)
