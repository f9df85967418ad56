"""Element-wise layers applied to the features of a sparse tensor."""

from __future__ import annotations

from torch import nn

from ..tensor import SparseTensor


class _FeatureWise:
    """Mixin: run the parent ``nn.Module`` on ``x.feats`` and keep coords and cache."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"{type(self).__name__} expects x to be a SparseTensor, got {type(x).__name__}")
        return x.replace(super().forward(x.feats))  # type: ignore[misc]


class ReLU(_FeatureWise, nn.ReLU):
    """``nn.ReLU`` on sparse features."""


class LeakyReLU(_FeatureWise, nn.LeakyReLU):
    """``nn.LeakyReLU`` on sparse features."""


class SiLU(_FeatureWise, nn.SiLU):
    """``nn.SiLU`` on sparse features."""


class Dropout(_FeatureWise, nn.Dropout):
    """``nn.Dropout`` on sparse features (drops feature entries, not voxels)."""


class Linear(_FeatureWise, nn.Linear):
    """``nn.Linear`` on sparse features (a 1x1x1 conv without map building)."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        if isinstance(x, SparseTensor) and x.feats.shape[1] != self.in_features:
            raise ValueError(
                f"x.feats has {x.feats.shape[1]} channels but Linear expects in_features={self.in_features}"
            )
        return super().forward(x)
