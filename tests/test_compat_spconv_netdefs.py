"""spconv-style model code for ``test_compat_spconv_models.py`` and ``benchmarks/bench_compat_spconv.py``.

Written as detection/segmentation code bases write it: ``import spconv.pytorch
as spconv`` at the top, nothing else. The tests load this file twice — once
with the real spconv 2.3.8, once under ``torchsparse_lite.compat.spconv.install()``
— so both libraries run literally the same class code. No tests here.
"""

from __future__ import annotations

import torch
from torch import nn

try:
    import spconv.pytorch as spconv
except ImportError:  # no spconv installed: the compat layer under its own name
    import torchsparse_lite.compat.spconv as spconv


def bn(c):
    return nn.BatchNorm1d(c, eps=1e-3, momentum=0.01)


def block(cin, cout, k, stride=1, padding=0, key=None, conv="subm"):
    if conv == "subm":
        layer = spconv.SubMConv3d(cin, cout, k, bias=False, indice_key=key)
    else:
        layer = spconv.SparseConv3d(cin, cout, k, stride=stride, padding=padding, bias=False, indice_key=key)
    return spconv.SparseSequential(layer, bn(cout), nn.ReLU())


class SecondBackbone(nn.Module):
    """Voxel features -> BEV map ``[B, C * D, H, W]`` (SECOND / VoxelBackBone8x layout)."""

    def __init__(self, in_channels, grid_zyx, width=16):
        super().__init__()
        w = width
        self.sparse_shape = [grid_zyx[0] + 1, grid_zyx[1], grid_zyx[2]]
        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, w, 3, padding=1, bias=False, indice_key="subm1"), bn(w), nn.ReLU()
        )
        self.conv1 = spconv.SparseSequential(block(w, w, 3, padding=1, key="subm1"))
        self.conv2 = spconv.SparseSequential(
            block(w, 2 * w, 3, 2, 1, "spconv2", "spconv"), block(2 * w, 2 * w, 3, key="subm2")
        )
        self.conv3 = spconv.SparseSequential(
            block(2 * w, 4 * w, 3, 2, 1, "spconv3", "spconv"), block(4 * w, 4 * w, 3, key="subm3")
        )
        self.conv4 = spconv.SparseSequential(
            block(4 * w, 4 * w, 3, 2, (0, 1, 1), "spconv4", "spconv"), block(4 * w, 4 * w, 3, key="subm4")
        )
        down = spconv.SparseConv3d(4 * w, 8 * w, (3, 1, 1), (2, 1, 1), padding=0, bias=False, indice_key="down")
        self.conv_out = spconv.SparseSequential(down, bn(8 * w), nn.ReLU())

    def forward(self, voxel_features, voxel_coords, batch_size):
        x = spconv.SparseConvTensor(voxel_features, voxel_coords, self.sparse_shape, batch_size)
        x = self.conv4(self.conv3(self.conv2(self.conv1(self.conv_input(x)))))
        dense = self.conv_out(x).dense()
        n, c, d, h, w = dense.shape
        return dense.view(n, c * d, h, w)


class ResBlock(spconv.SparseModule):
    def __init__(self, c, key, bias):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(c, c, 3, padding=1, bias=bias, indice_key=key)
        self.bn1 = bn(c)
        self.relu = nn.ReLU()
        self.conv2 = spconv.SubMConv3d(c, c, 3, padding=1, bias=bias, indice_key=key)
        self.bn2 = bn(c)

    def forward(self, x):
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        out = out.replace_feature(self.bn2(out.features))
        return out.replace_feature(self.relu(out.features + identity))


class ResBackbone(nn.Module):
    """Residual voxel backbone whose blocks subclass ``SparseModule``; ``bias`` on the blocks' subm convs."""

    def __init__(self, in_channels, width=8, bias=True):
        super().__init__()
        w = width
        self.stem = spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, w, 3, padding=1, bias=False, indice_key="subm1"), bn(w), nn.ReLU()
        )
        self.layer1 = spconv.SparseSequential(ResBlock(w, "res1", bias), ResBlock(w, "res1", bias))
        self.layer2 = spconv.SparseSequential(
            block(w, 2 * w, 3, 2, 1, "spconv2", "spconv"), ResBlock(2 * w, "res2", bias)
        )
        self.layer3 = spconv.SparseSequential(
            block(2 * w, 4 * w, 3, 2, 1, "spconv3", "spconv"), ResBlock(4 * w, "res3", bias)
        )

    def forward(self, x):
        return self.layer3(self.layer2(self.layer1(self.stem(x))))


class UNet(nn.Module):
    """U-Net: inverse convs share the down convs' ``indice_key``s; skip features concatenated row by row."""

    def __init__(self, in_channels, num_classes, width=8):
        super().__init__()
        w = width
        self.stem = block(in_channels, w, 3, key="subm1")
        self.down1 = spconv.SparseSequential(
            block(w, 2 * w, 3, 2, 1, "down1", "spconv"), block(2 * w, 2 * w, 3, key="subm2")
        )
        self.down2 = spconv.SparseSequential(
            block(2 * w, 4 * w, 2, 2, 0, "down2", "spconv"), block(4 * w, 4 * w, 3, key="subm3")
        )
        self.up2 = spconv.SparseSequential(
            spconv.SparseInverseConv3d(4 * w, 2 * w, 2, indice_key="down2", bias=False), bn(2 * w), nn.ReLU()
        )
        self.fuse2 = block(4 * w, 2 * w, 3, key="subm2")
        self.up1 = spconv.SparseSequential(
            spconv.SparseInverseConv3d(2 * w, w, 3, indice_key="down1", bias=False), bn(w), nn.ReLU()
        )
        self.fuse1 = block(2 * w, w, 3, key="subm1")
        self.head = spconv.SubMConv3d(w, num_classes, 1, bias=True)

    def forward(self, x):
        x0 = self.stem(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        u2 = self.up2(x2)
        u2 = self.fuse2(u2.replace_feature(torch.cat([u2.features, x1.features], 1)))
        u1 = self.up1(u2)
        u1 = self.fuse1(u1.replace_feature(torch.cat([u1.features, x0.features], 1)))
        return self.head(u1)
