"""Test models: a tiny sparse U-Net (stem, residual stage, transposed conv + concat skip, linear head), inputs."""

from __future__ import annotations

import torch
from torch import nn

from torchsparse_lite.models.blocks import ConvBlock, UpBlock, down_stage
from torchsparse_lite.tensor import SparseTensor


class TinyUNet(nn.Module):
    """``stem -> down stage (residual, 1x1 shortcut) -> up (transposed conv, cat skip, residual) -> linear``.

    ``forward(x)``: SparseTensor [N, in_channels] -> logits [N, num_classes].
    """

    def __init__(self, in_channels: int = 4, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stem = ConvBlock(in_channels, width, 3)
        self.down = down_stage(width, 2 * width, 1)
        self.up = UpBlock(2 * width, width, width, 1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        x0 = self.stem(x)
        return self.classifier(self.up(self.down(x0), x0).feats)


def random_input(n: int = 300, extent: int = 16, channels: int = 4, batch: int = 1, seed: int = 0) -> SparseTensor:
    """A random sparse tensor: at most ``n`` unique voxels in ``[0, extent)^3`` per batch, Gaussian features."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.randint(0, batch, (n, 1), generator=gen)
    xyz = torch.randint(0, extent, (n, 3), generator=gen)
    coords = torch.unique(torch.cat([b, xyz], 1), dim=0).to(torch.int32)
    return SparseTensor(torch.randn(len(coords), channels, generator=gen), coords)


def small_minkunet(seed: int = 0, in_channels: int = 4, num_classes: int = 5) -> nn.Module:
    """A seeded MinkUNet at cr 0.25 in eval mode (the pruning tests' real network)."""
    from torchsparse_lite.models import MinkUNet  # noqa: PLC0415 - models pull in the whole stack

    torch.manual_seed(seed)
    return MinkUNet(in_channels, num_classes, cr=0.25).eval()
