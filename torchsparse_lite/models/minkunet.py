"""MinkUNet: the sparse U-Net of MinkowskiEngine / TorchSparse / SPVNAS for LiDAR segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..tensor import SparseTensor
from .blocks import ConvBlock, UpBlock, down_stage

BASE_CHANNELS: tuple[int, ...] = (32, 32, 64, 128, 256, 256, 128, 96, 96)
"""SPVNAS MinkUNet channels: stem, 4 encoder stages, 4 decoder stages (before ``cr``)."""

DEPTHS: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2, 2, 2, 2, 2),
    34: (2, 3, 4, 6, 2, 2, 2, 2),
}
"""Residual blocks per stage (4 encoder, then 4 decoder) of MinkUNet-18 / -34 (MinkowskiEngine)."""


def scale_channels(channels: Sequence[int], cr: float) -> tuple[int, ...]:
    """``max(1, int(c * cr))`` for every entry (SPVNAS's width multiplier)."""
    if not cr > 0:
        raise ValueError(f"cr (width multiplier) must be > 0, got {cr!r}")
    return tuple(max(1, int(c * cr)) for c in channels)


class MinkUNet(nn.Module):
    """Sparse U-Net for per-voxel semantic segmentation.

    Layout (SPVNAS's MinkUNet, channels ``cs = BASE_CHANNELS * cr``):

    * ``stem``: two submanifold 3x3x3 ``ConvBlock`` (in -> cs0 -> cs0);
    * ``stage1..stage4``: stride-2 k=2 ``ConvBlock`` + residual blocks (cs[i-1] -> cs[i]);
    * ``up1..up4``: :class:`UpBlock` (transposed stride-2 k=2 conv, cat with the
      matching encoder output, residual blocks) with cs5..cs8;
    * ``classifier``: ``nn.Linear(cs8, num_classes)`` on the voxel features.

    Args:
        in_channels: input feature channels (e.g. 4: x, y, z, remission).
        num_classes: output classes.
        cr: width multiplier for all channels (1.0 = the published net).
        depth: 18 or 34 (residual blocks per stage, see :data:`DEPTHS`).
        channels: explicit 9 channel counts overriding ``BASE_CHANNELS * cr``
            (used to rebuild pruned networks).

    ``forward(x)``: SparseTensor [N, in_channels] at stride 1 -> logits [N, num_classes]
    (a plain tensor whose rows follow ``x``'s rows).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        cr: float = 1.0,
        depth: int = 18,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        cs = scale_channels(BASE_CHANNELS, cr) if channels is None else tuple(int(c) for c in channels)
        if len(cs) != 9 or min(cs) < 1:
            raise ValueError(f"channels must be 9 positive ints, got {channels!r}")
        self.in_channels, self.num_classes, self.cr, self.depth, self.channels = in_channels, num_classes, cr, depth, cs
        blocks = DEPTHS[depth]
        self.stem = nn.Sequential(ConvBlock(in_channels, cs[0], 3), ConvBlock(cs[0], cs[0], 3))
        self.stage1 = down_stage(cs[0], cs[1], blocks[0])
        self.stage2 = down_stage(cs[1], cs[2], blocks[1])
        self.stage3 = down_stage(cs[2], cs[3], blocks[2])
        self.stage4 = down_stage(cs[3], cs[4], blocks[3])
        self.up1 = UpBlock(cs[4], cs[5], cs[3], blocks[4])
        self.up2 = UpBlock(cs[5], cs[6], cs[2], blocks[5])
        self.up3 = UpBlock(cs[6], cs[7], cs[1], blocks[6])
        self.up4 = UpBlock(cs[7], cs[8], cs[0], blocks[7])
        self.classifier = nn.Linear(cs[8], num_classes)
        self.reset_norms()

    def reset_norms(self) -> None:
        """BatchNorm weight 1, bias 0 (as SPVNAS initialises them)."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def config(self) -> dict:
        """Constructor arguments that rebuild this network (stored in checkpoints)."""
        return {
            "name": f"minkunet{self.depth}",
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "cr": self.cr,
            "channels": list(self.channels),
        }

    def forward(self, x: SparseTensor) -> torch.Tensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"MinkUNet expects a SparseTensor, got {type(x).__name__}")
        if x.stride != (1, 1, 1):
            raise ValueError(f"MinkUNet expects a stride-1 input, got stride {x.stride}")
        x0 = self.stem(x)
        x1 = self.stage1(x0)
        x2 = self.stage2(x1)
        x3 = self.stage3(x2)
        x4 = self.stage4(x3)
        y1 = self.up1(x4, x3)
        y2 = self.up2(y1, x2)
        y3 = self.up3(y2, x1)
        y4 = self.up4(y3, x0)
        return self.classifier(y4.feats)
