"""MinkUNet: the sparse U-Net of MinkowskiEngine / TorchSparse / SPVNAS for LiDAR segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..nn.voxel_drop import DropRecord
from ..tensor import SparseTensor
from .blocks import ConvBlock, UpBlock, down_stage

BASE_CHANNELS: tuple[int, ...] = (32, 32, 64, 128, 256, 256, 128, 96, 96)
"""SPVNAS MinkUNet channels: stem, 4 encoder stages, 4 decoder stages (before ``cr``)."""

DEPTHS: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2, 2, 2, 2, 2),
    34: (2, 3, 4, 6, 2, 2, 2, 2),
}
"""Residual blocks per stage (4 encoder, then 4 decoder) of MinkUNet-18 / -34 (MinkowskiEngine)."""

ENCODER_STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4")
"""Encoder stages, finest first; each may hold a voxel drop (``MinkUNet.voxel_drop``)."""
DECODER_STAGES: tuple[str, ...] = ("up1", "up2", "up3", "up4")
"""Decoder stages, coarsest first (``up1``'s skip is ``stage3``'s output, ``up4``'s the stem's)."""


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

    Dynamic voxel pruning (:func:`torchsparse_lite.prune.voxels.apply_voxel_pruning`):
    ``voxel_drop`` is None (no child, no state_dict key, the plain forward) or an
    ``nn.ModuleDict`` of :class:`~torchsparse_lite.nn.VoxelDrop` keyed by encoder
    stage (:data:`ENCODER_STAGES`). A drop at stage ``s`` acts after the stage's
    stride-2 conv: its residual blocks, every deeper stage and the decoder stage
    at the same stride run on the survivors (maps built for them), and that
    decoder stage's output (for ``stage4``: the encoder output) is restored to the
    full stride-``2^s`` coordinates before the transposed conv that needs stage
    ``s``'s down-sampling map. The stride-1 level is never dropped, so every
    input voxel gets logits.

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
        self.voxel_drop: nn.ModuleDict | None = None
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
        skips = [self.stem(x)]
        records: list[DropRecord | None] = [None]
        for name in ENCODER_STAGES:
            h, record = self._encode(name, skips[-1])
            skips.append(h)
            records.append(record)
        y = self._restore("stage4", skips[4], records[4])
        for level, name in zip((3, 2, 1, 0), DECODER_STAGES):
            y = getattr(self, name)(y, skips[level])
            if level:
                y = self._restore(ENCODER_STAGES[level - 1], y, records[level])
        return self.classifier(y.feats)

    def _dropper(self, stage: str) -> nn.Module | None:
        drops = self.voxel_drop
        return drops[stage] if drops is not None and stage in drops else None

    def _encode(self, stage: str, x: SparseTensor) -> tuple[SparseTensor, DropRecord | None]:
        """Encoder stage ``stage`` on ``x``; with a voxel drop there, its blocks run on the survivors."""
        drop = self._dropper(stage)
        if drop is None:
            return getattr(self, stage)(x), None
        down, *blocks = getattr(self, stage)
        h, record = drop(down(x))
        for block in blocks:
            h = block(h)
        return h, record

    def _restore(self, stage: str, y: SparseTensor, record: DropRecord | None) -> SparseTensor:
        """``y`` on the full coordinates of ``stage``'s down-sampling conv (unchanged without a drop there)."""
        drop = self._dropper(stage)
        return y if drop is None else drop.restore(y, record)
