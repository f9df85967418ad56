"""Normalisation layers over the features of a sparse tensor."""

from __future__ import annotations

import torch
from torch import nn

from ..tensor import SparseTensor


class BatchNorm(nn.BatchNorm1d):
    """Batch norm over all active voxels of the batch (same parameters as ``nn.BatchNorm1d``)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        _check_input(x, self.num_features, "BatchNorm")
        if x.feats.shape[0] == 0:
            return x  # nothing to normalise; running statistics stay untouched
        return x.replace(super().forward(x.feats))


def _check_input(x: SparseTensor, channels: int, layer: str) -> None:
    if not isinstance(x, SparseTensor):
        raise TypeError(f"{layer} expects x to be a SparseTensor, got {type(x).__name__}")
    if x.feats.shape[1] != channels:
        raise ValueError(
            f"x.feats has {x.feats.shape[1]} channels but {layer}({channels}) expects {channels}; "
            "match num_features/num_channels to the previous layer's out_channels"
        )


class GroupNorm(nn.GroupNorm):
    """Group norm computed per sample of the batch over its active voxels.

    Statistics of sample ``b`` and group ``g`` use every voxel of ``b`` and
    every channel of ``g``, as ``nn.GroupNorm`` does on a dense sample.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        _check_input(x, self.num_channels, "GroupNorm")
        feats = x.feats
        n, c = feats.shape
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
