"""``MinkowskiEngine.modules.resnet_block``: the residual blocks ME's example networks are built from.

Attribute names (``conv1``/``norm1``/``conv2``/``norm2``[/``conv3``/``norm3``],
``downsample``) and hence state_dict keys are ME's.
"""

from __future__ import annotations

from torch import nn

from ..conv import MinkowskiConvolution
from ..layers import MinkowskiBatchNorm, MinkowskiReLU
from ..manager import check_dimension
from ..tensor import SparseTensor


class BasicBlock(nn.Module):
    """Two 3x3x3 convs with batch norm and a residual connection (``expansion = 1``)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        bn_momentum: float = 0.1,
        dimension: int = -1,
    ) -> None:
        super().__init__()
        d = check_dimension(dimension, "BasicBlock")
        self.conv1 = MinkowskiConvolution(
            inplanes, planes, kernel_size=3, stride=stride, dilation=dilation, dimension=d
        )
        self.norm1 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = MinkowskiConvolution(planes, planes, kernel_size=3, stride=1, dilation=dilation, dimension=d)
        self.norm2 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.relu = MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        out += residual
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (strided) -> 1x1x1 convs with a residual connection (``expansion = 4``)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        bn_momentum: float = 0.1,
        dimension: int = -1,
    ) -> None:
        super().__init__()
        d = check_dimension(dimension, "Bottleneck")
        self.conv1 = MinkowskiConvolution(inplanes, planes, kernel_size=1, dimension=d)
        self.norm1 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = MinkowskiConvolution(planes, planes, kernel_size=3, stride=stride, dilation=dilation, dimension=d)
        self.norm2 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv3 = MinkowskiConvolution(planes, planes * self.expansion, kernel_size=1, dimension=d)
        self.norm3 = MinkowskiBatchNorm(planes * self.expansion, momentum=bn_momentum)
        self.relu = MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        out += residual
        return self.relu(out)
