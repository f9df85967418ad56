"""MinkUNet written with spconv 2.x modules, module for module the native :class:`~torchsparse_lite.models.MinkUNet`.

Every child has the native model's name (``stem.0.conv``, ``stage1.1.main.0.bn``,
``up2.up.conv``, ``classifier``, ...), so the native weights load into it with
``load_state_dict(to_spconv_state_dict(native))``. The spconv module is passed
in (``sp``), so the same code runs on the real ``spconv.pytorch`` or on
``torchsparse_lite.compat.spconv``.

Maps: submanifold convs of one level share ``indice_key=f"subm{level}"``, each
strided k=2 conv stores its pairs under ``f"down{level}"`` and the matching
``SparseInverseConv3d`` reuses them, returning the finer indices in their row
order (so the skip concatenation is row by row, as in spconv U-Nets).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def spconv_block(sp, cin: int, cout: int, k: int, level: int, kind: str, relu: bool = True):
    """``conv -> bn (-> relu)`` as a ``SparseSequential`` named like the native ``ConvBlock``."""
    if kind == "subm":
        conv = sp.SubMConv3d(cin, cout, k, padding=k // 2, bias=False, indice_key=f"subm{level}")
    elif kind == "down":
        conv = sp.SparseConv3d(cin, cout, k, stride=2, padding=0, bias=False, indice_key=f"down{level}")
    else:
        conv = sp.SparseInverseConv3d(cin, cout, k, bias=False, indice_key=f"down{level}")
    layers = OrderedDict(conv=conv, bn=nn.BatchNorm1d(cout))
    if relu:
        layers["relu"] = nn.ReLU(inplace=True)
    return sp.SparseSequential(layers)


def _residual(sp, cin: int, cout: int, level: int):
    """The native ``ResidualBlock`` (stride 1): ``relu(main(x) + downsample(x))``."""

    class Residual(sp.SparseModule):
        def __init__(self) -> None:
            super().__init__()
            self.main = sp.SparseSequential(
                spconv_block(sp, cin, cout, 3, level, "subm"),
                spconv_block(sp, cout, cout, 3, level, "subm", relu=False),
            )
            self.downsample = (
                nn.Identity() if cin == cout else spconv_block(sp, cin, cout, 1, level, "subm", relu=False)
            )
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            skip = x if isinstance(self.downsample, nn.Identity) else self.downsample(x)
            y = self.main(x)
            return y.replace_feature(self.relu(y.features + skip.features))

    return Residual()


def build_spconv_minkunet(sp, native: nn.Module) -> nn.Module:
    """The spconv mirror of ``native`` (a MinkUNet): same channels, depth and child names.

    Args:
        sp: ``spconv.pytorch`` or ``torchsparse_lite.compat.spconv``.
        native: the :class:`~torchsparse_lite.models.MinkUNet` whose layout to mirror.

    ``forward(x)``: a ``SparseConvTensor`` [N, in_channels] -> logits [N, num_classes] in its rows.
    """
    from ...models.minkunet import DEPTHS  # noqa: PLC0415 - bench peers load models only when asked

    cs, blocks = native.channels, DEPTHS[native.depth]

    def down_stage(cin: int, cout: int, n: int, level: int):
        layers = [spconv_block(sp, cin, cin, 2, level, "down"), _residual(sp, cin, cout, level + 1)]
        layers += [_residual(sp, cout, cout, level + 1) for _ in range(n - 1)]
        return sp.SparseSequential(*layers)

    class Up(nn.Module):
        def __init__(self, cin: int, cout: int, cskip: int, n: int, level: int) -> None:
            super().__init__()
            self.up = spconv_block(sp, cin, cout, 2, level, "inverse")
            self.blocks = sp.SparseSequential(
                _residual(sp, cout + cskip, cout, level), *[_residual(sp, cout, cout, level) for _ in range(n - 1)]
            )

        def forward(self, x, skip):
            y = self.up(x)
            return self.blocks(y.replace_feature(torch.cat([y.features, skip.features], 1)))

    class SpconvMinkUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = sp.SparseSequential(
                spconv_block(sp, native.in_channels, cs[0], 3, 0, "subm"), spconv_block(sp, cs[0], cs[0], 3, 0, "subm")
            )
            for i in range(4):
                setattr(self, f"stage{i + 1}", down_stage(cs[i], cs[i + 1], blocks[i], i))
            for i in range(4):
                setattr(self, f"up{i + 1}", Up(cs[4 + i], cs[5 + i], cs[3 - i], blocks[4 + i], 3 - i))
            self.classifier = nn.Linear(cs[8], native.num_classes)

        def forward(self, x) -> torch.Tensor:
            x0 = self.stem(x)
            x1 = self.stage1(x0)
            x2 = self.stage2(x1)
            x3 = self.stage3(x2)
            x4 = self.stage4(x3)
            y = self.up4(self.up3(self.up2(self.up1(x4, x3), x2), x1), x0)
            return self.classifier(y.features)

    return SpconvMinkUNet()
