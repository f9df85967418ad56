"""2D bird's-eye-view neck and CenterPoint heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_OUTPUTS = (("reg", 2), ("z", 1), ("dim", 3), ("rot", 2), ("rot2", 2))


def conv2d_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BEVNeck(nn.Module):
    """Two-scale 2D neck (SECOND RPN-style): a stride-1 block and a stride-2 block upsampled back, concatenated.

    Input [B, Cin, X, Y] -> output [B, 2 * channels, X, Y].
    """

    def __init__(self, in_channels: int, channels: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.block1 = nn.Sequential(
            conv2d_bn_relu(in_channels, channels), *[conv2d_bn_relu(channels, channels) for _ in range(depth)]
        )
        wide = 2 * channels
        self.block2 = nn.Sequential(
            conv2d_bn_relu(channels, wide, 2), *[conv2d_bn_relu(wide, wide) for _ in range(depth)]
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(wide, channels, 2, 2, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.out_channels = 2 * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.block1(x)
        b = self.up(self.block2(a))
        b = F.pad(b, (0, a.shape[3] - b.shape[3], 0, a.shape[2] - b.shape[2]))
        return torch.cat([a, b], dim=1)


class CenterHead(nn.Module):
    """One CenterPoint task head: heatmap of its classes plus the regression maps.

    Outputs (dict of [B, *, X, Y]): ``heatmap`` (logits, one per class of the
    group), ``reg`` (2, sub-cell offset), ``z`` (1), ``dim`` (3, log l, w, h),
    ``rot`` (2, sin, cos of yaw), ``rot2`` (2, sin, cos of twice the yaw).
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        outs = (("heatmap", num_classes),) + HEAD_OUTPUTS
        self.branches = nn.ModuleDict(
            {name: nn.Sequential(conv2d_bn_relu(in_channels, hidden), nn.Conv2d(hidden, ch, 1)) for name, ch in outs}
        )
        nn.init.constant_(self.branches["heatmap"][-1].bias, -2.19)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: branch(x) for name, branch in self.branches.items()}

    @staticmethod
    def codes(out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Regression maps concatenated in code order -> [B, 10, X, Y]."""
        return torch.cat([out[name] for name, _ in HEAD_OUTPUTS], dim=1)
