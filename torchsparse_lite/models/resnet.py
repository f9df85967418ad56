"""Sparse ResNet encoders (TorchSparse's SparseResNet21D style) and a scene classifier on top."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import nn as spnn
from ..tensor import SparseTensor
from .blocks import ConvBlock, ResidualBlock

StageSpec = tuple[int, int, int | tuple[int, int, int], int | tuple[int, int, int]]
"""(num_blocks, out_channels, kernel_size, stride) of one stage."""

RESNET_STAGES: dict[int, tuple[StageSpec, ...]] = {
    # TorchSparse SparseResNet21D: the last stage squeezes one axis (kernel (1, 3, 1), stride (1, 2, 1)).
    21: ((3, 16, 3, 1), (3, 32, 3, 2), (3, 64, 3, 2), (3, 128, 3, 2), (1, 128, (1, 3, 1), (1, 2, 1))),
    # ResNet-34 layout (3, 4, 6, 3 residual blocks) after a 1-block stem stage.
    34: ((1, 32, 3, 1), (3, 32, 3, 2), (4, 64, 3, 2), (6, 128, 3, 2), (3, 256, 3, 2)),
}


class SparseResNet(nn.ModuleList):
    """Sparse ResNet encoder: a list of stages, each an ``nn.Sequential``.

    Each stage starts with a ``ConvBlock(in, out, kernel, stride)`` (strided for
    stride > 1, submanifold otherwise) followed by ``num_blocks - 1`` residual
    blocks ``out -> out``, as TorchSparse's ``SparseResNet``.

    Args:
        stages: :data:`StageSpec` per stage, or an int key of :data:`RESNET_STAGES`.
        in_channels: input feature channels.
        width_multiplier: scales every stage's channels (``max(1, int(c * w))``).

    ``forward(x)``: SparseTensor [N, in_channels] -> list of one SparseTensor
    per stage (strides multiply by each stage's stride).
    """

    def __init__(
        self,
        stages: Sequence[StageSpec] | int = 21,
        in_channels: int = 4,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(stages, int):
            if stages not in RESNET_STAGES:
                raise ValueError(f"stages must be one of {sorted(RESNET_STAGES)} or a list of specs, got {stages}")
            stages = RESNET_STAGES[stages]
        if not width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}")
        self.in_channels = in_channels
        self.out_channels: list[int] = []
        c = in_channels
        for num_blocks, out_channels, kernel_size, stride in stages:
            if num_blocks < 1:
                raise ValueError(f"every stage needs >= 1 block, got {num_blocks}")
            out = max(1, int(out_channels * width_multiplier))
            layers: list[nn.Module] = [ConvBlock(c, out, kernel_size, stride)]
            layers += [ResidualBlock(out, out, kernel_size) for _ in range(num_blocks - 1)]
            self.append(nn.Sequential(*layers))
            self.out_channels.append(out)
            c = out

    def forward(self, x: SparseTensor) -> list[SparseTensor]:  # type: ignore[override]
        outputs = []
        for stage in self:
            x = stage(x)
            outputs.append(x)
        return outputs


class SparseResNetClassifier(nn.Module):
    """Scene classifier: :class:`SparseResNet` ``backbone``, global ``pool``, ``fc`` head.

    ``forward(x)``: SparseTensor [N, in_channels] (B samples) -> logits [B, num_classes].
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 21, cr: float = 1.0) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.in_channels, self.num_classes, self.depth, self.cr = in_channels, num_classes, depth, cr
        self.backbone = SparseResNet(depth, in_channels, cr)
        self.pool = spnn.GlobalAvgPool()
        self.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def config(self) -> dict:
        """Constructor arguments that rebuild this network."""
        return {"name": f"resnet{self.depth}", "in_channels": self.in_channels, "num_classes": self.num_classes,
                "cr": self.cr}

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return self.fc(self.pool(self.backbone(x)[-1]))
