"""The plain 4-level sparse U-Net of the CPU peer benchmark, natively and written with spconv 2.x modules.

Layout (widths 32, 64, 128, 256; issue 13's "U-Net"): a submanifold 3x3x3
stem, per level two submanifold 3x3x3 ``conv -> bn -> relu`` blocks
(``enc.i``), k2 s2 down-sampling convs between levels (``down.i``), and on
the way up a transposed k2 s2 conv (``up.i``, reusing the down-sampling map)
whose output is *added* to the encoder features of that level before two
more submanifold blocks (``dec.i``); a linear head gives the logits.

:class:`SparseUNet` is built of ``torchsparse_lite.nn`` layers;
:func:`build_spconv_unet` gives the same network, child for child, from an
spconv module (``spconv.pytorch`` or ``torchsparse_lite.compat.spconv``), so
``load_state_dict(to_spconv_state_dict(native))`` moves the weights over.
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.blocks import ConvBlock
from ...tensor import SparseTensor
from .spconv_minkunet import spconv_block

WIDTHS = (32, 64, 128, 256)


class SparseUNet(nn.Module):
    """``forward(x)``: SparseTensor [N, in_channels] -> logits [N, num_classes] in its rows."""

    def __init__(self, in_channels: int = 4, num_classes: int = 19, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.widths = in_channels, num_classes, tuple(widths)
        w = self.widths
        self.stem = ConvBlock(in_channels, w[0], 3)
        self.enc = nn.ModuleList(nn.Sequential(ConvBlock(c, c, 3), ConvBlock(c, c, 3)) for c in w)
        self.down = nn.ModuleList(ConvBlock(w[i], w[i + 1], 2, 2) for i in range(len(w) - 1))
        self.up = nn.ModuleList(ConvBlock(w[i + 1], w[i], 2, 2, transposed=True) for i in range(len(w) - 1))
        self.dec = nn.ModuleList(nn.Sequential(ConvBlock(c, c, 3), ConvBlock(c, c, 3)) for c in w[:-1])
        self.head = nn.Linear(w[0], num_classes)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return _forward(self, x, lambda y, skip: y + skip, lambda t: t.feats)


def _forward(net: nn.Module, x, add, feats) -> torch.Tensor:
    """The U-Net's data flow over either library's tensors (``add(y, skip)``, ``feats(x)`` differ)."""
    x, skips = net.stem(x), []
    for i, enc in enumerate(net.enc):
        x = enc(x)
        if i < len(net.down):
            skips.append(x)
            x = net.down[i](x)
    for i in reversed(range(len(net.up))):
        x = net.dec[i](add(net.up[i](x), skips[i]))
    return net.head(feats(x))


def build_spconv_unet(sp, native: SparseUNet) -> nn.Module:
    """The spconv mirror of ``native``: submanifold convs of level ``i`` share ``indice_key=f"subm{i}"``,
    ``down.i`` stores its pairs under ``f"down{i}"`` and ``up.i`` (``SparseInverseConv3d``) reuses them."""
    w = native.widths

    def pair(c: int, level: int):
        return sp.SparseSequential(spconv_block(sp, c, c, 3, level, "subm"), spconv_block(sp, c, c, 3, level, "subm"))

    class SpconvUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = spconv_block(sp, native.in_channels, w[0], 3, 0, "subm")
            self.enc = nn.ModuleList(pair(c, i) for i, c in enumerate(w))
            self.down = nn.ModuleList(spconv_block(sp, w[i], w[i + 1], 2, i, "down") for i in range(len(w) - 1))
            self.up = nn.ModuleList(spconv_block(sp, w[i + 1], w[i], 2, i, "inverse") for i in range(len(w) - 1))
            self.dec = nn.ModuleList(pair(c, i) for i, c in enumerate(w[:-1]))
            self.head = nn.Linear(w[0], native.num_classes)

        def forward(self, x) -> torch.Tensor:
            add = lambda y, skip: y.replace_feature(y.features + skip.features)  # noqa: E731
            return _forward(self, x, add, lambda t: t.features)

    return SpconvUNet()
