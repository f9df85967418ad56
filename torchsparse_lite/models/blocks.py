"""Building blocks of the sparse networks, made only of ``torchsparse_lite.nn`` layers.

The structure is deliberately plain so that tools (pruning, MAC counting) can
trace it: every block is an ``nn.Sequential`` or a module whose children have
fixed, descriptive names, and the only non-sequential data flow is

* :class:`ResidualBlock`: ``relu(main(x) + downsample(x))``;
* :class:`UpBlock`: ``blocks(cat([up(x), skip]))`` (up-sampled features first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from .. import nn as spnn
from ..kmap.geometry import triple
from ..tensor import SparseTensor, cat


class ConvBlock(nn.Sequential):
    """``conv -> bn -> relu`` (children named ``conv``, ``bn``, ``relu``).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size, stride, dilation: conv geometry (stride 1 = submanifold).
        transposed: an up-sampling conv that reuses the matching down-sampling map.
        relu: append the ReLU (False gives ``conv -> bn``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        *,
        transposed: bool = False,
        relu: bool = True,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = spnn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, transposed=transposed
        )
        layers["bn"] = spnn.BatchNorm(out_channels)
        if relu:
            layers["relu"] = spnn.ReLU(inplace=True)
        super().__init__(layers)


class ResidualBlock(nn.Module):
    """Basic residual block: ``relu(main(x) + downsample(x))``.

    ``main`` is ``ConvBlock(in, out, k, stride)`` then ``ConvBlock(out, out, k, relu=False)``.
    ``downsample`` is a 1x1x1 ``ConvBlock(..., relu=False)`` (strided when the
    block is) when channels or stride change, else ``nn.Identity``.

    Input: SparseTensor [N, in_channels]; output: SparseTensor [N', out_channels]
    (N' = N for stride 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        self.main = nn.Sequential(
            ConvBlock(in_channels, out_channels, kernel_size, stride, dilation),
            ConvBlock(out_channels, out_channels, kernel_size, 1, dilation, relu=False),
        )
        unit = triple(stride, "stride") == (1, 1, 1)
        if in_channels == out_channels and unit:
            self.downsample: nn.Module = nn.Identity()
        else:
            self.downsample = ConvBlock(in_channels, out_channels, 1, stride, relu=False)
        self.relu = spnn.ReLU(inplace=True)

    @property
    def identity_shortcut(self) -> bool:
        """True when the shortcut is the identity: the block may be replaced by ``nn.Identity`` (block pruning)."""
        return isinstance(self.downsample, nn.Identity)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.relu(self.main(x) + self.downsample(x))


class UpBlock(nn.Module):
    """Decoder stage: transposed stride-2 conv, concat with the skip, residual blocks.

    Children: ``up`` (transposed :class:`ConvBlock`, ``in -> out``) and
    ``blocks`` (``nn.Sequential`` of :class:`ResidualBlock`, the first taking
    ``out + skip_channels``).

    ``forward(x, skip)``: x is the coarse SparseTensor [Nc, in_channels], skip the
    encoder tensor [Nf, skip_channels] whose coordinates ``up`` restores;
    returns [Nf, out_channels] on the skip's coordinates.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        skip_channels: int,
        num_blocks: int = 2,
        kernel_size: int = 2,
        stride: int = 2,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.up = ConvBlock(in_channels, out_channels, kernel_size, stride, transposed=True)
        blocks = [ResidualBlock(out_channels + skip_channels, out_channels)]
        blocks += [ResidualBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        return self.blocks(cat([self.up(x), skip]))


def down_stage(in_channels: int, out_channels: int, num_blocks: int, kernel_size: int = 2) -> nn.Sequential:
    """Encoder stage: stride-2 ``ConvBlock(in, in, k)`` then ``num_blocks`` residual blocks ``in -> out``."""
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    layers: list[nn.Module] = [ConvBlock(in_channels, in_channels, kernel_size, stride=2)]
    layers.append(ResidualBlock(in_channels, out_channels))
    layers += [ResidualBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)
