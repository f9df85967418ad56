"""Normalisation layers over the features of a sparse tensor."""

from __future__ import annotations

import torch
from torch import nn

from ..tensor import SparseTensor


class BatchNorm(nn.BatchNorm1d):
    """Batch norm over all active voxels of the batch (same parameters as ``nn.BatchNorm1d``)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class GroupNorm(nn.GroupNorm):
    """Group norm computed per sample of the batch over its active voxels.

    Statistics of sample ``b`` and group ``g`` use every voxel of ``b`` and
    every channel of ``g``, as ``nn.GroupNorm`` does on a dense sample.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        feats = x.feats
        n, c = feats.shape
        if c != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_channels}) got {c} channels")
        if n == 0:
            return x
        g = self.num_groups
        batch = x.coords[:, 0].long()
        nb = int(batch.max()) + 1
        grouped = feats.reshape(n, g, c // g)
        per_point = grouped.sum(2)
        sums = feats.new_zeros(nb, g).index_add_(0, batch, per_point)
        counts = torch.bincount(batch, minlength=nb).to(feats.dtype)[:, None] * (c // g)
        mean = sums / counts
        centred = grouped - mean[batch][:, :, None]
        var = feats.new_zeros(nb, g).index_add_(0, batch, (centred * centred).sum(2)) / counts
        out = centred / torch.sqrt(var[batch][:, :, None] + self.eps)
        out = out.reshape(n, c)
        if self.affine:
            out = out * self.weight + self.bias
        return x.replace(out)
