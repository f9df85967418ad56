"""TorchSparse 2.1's feature-wise, normalisation, pooling and BEV modules.

Norms and pools run the native modules on the native view of the tensor;
parameter names equal TorchSparse's (those of ``nn.BatchNorm1d`` /
``nn.GroupNorm``), so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .... import nn as native_nn
from ..tensor import SparseTensor

__all__ = [
    "BatchNorm",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GroupNorm",
    "LeakyReLU",
    "ReLU",
    "ToBEVConvolution",
    "ToBEVHeightCompression",
    "ToBEVReduction",
    "ToDenseBEVConvolution",
]


def _checked(x: object, layer: str) -> SparseTensor:
    if not isinstance(x, SparseTensor):
        raise TypeError(f"{layer} expects a torchsparse SparseTensor, got {type(x).__name__}")
    return x


class ReLU(nn.ReLU):
    """``nn.ReLU`` on the features (``ReLU(True)`` works in place, as in TorchSparse)."""

    def forward(self, input: SparseTensor) -> SparseTensor:
        return _checked(input, "ReLU")._with_feats(super().forward(input.feats))


class LeakyReLU(nn.LeakyReLU):
    """``nn.LeakyReLU`` on the features."""

    def forward(self, input: SparseTensor) -> SparseTensor:
        return _checked(input, "LeakyReLU")._with_feats(super().forward(input.feats))


class BatchNorm(native_nn.BatchNorm):
    """Batch norm over all voxels of the batch (``nn.BatchNorm1d`` parameters)."""

    def forward(self, input: SparseTensor) -> SparseTensor:  # type: ignore[override]
        x = _checked(input, "BatchNorm")
        if x.coords.shape[1] != 4:  # a single sample before collation: no batch column needed
            return x._with_feats(nn.BatchNorm1d.forward(self, x.feats))
        return x._with_feats(super().forward(x._native()).feats)


class GroupNorm(native_nn.GroupNorm):
    """Group norm per sample over its voxels (as TorchSparse's per-sample loop; ``nn.GroupNorm`` parameters)."""

    def forward(self, input: SparseTensor) -> SparseTensor:  # type: ignore[override]
        x = _checked(input, "GroupNorm")
        return x._with_feats(super().forward(x._native()).feats)


class GlobalAvgPool(native_nn.GlobalAvgPool):
    """Mean of each sample's features -> dense ``[batch_size, C]`` (an empty sample gives zeros, not NaN)."""

    def forward(self, input: SparseTensor) -> torch.Tensor:
        return super().forward(_checked(input, "GlobalAvgPool")._native())


class GlobalMaxPool(native_nn.GlobalMaxPool):
    """Max of each sample's features -> dense ``[batch_size, C]`` (an empty sample gives zeros)."""

    def forward(self, input: SparseTensor) -> torch.Tensor:
        return super().forward(_checked(input, "GlobalMaxPool")._native())


class _Unsupported(nn.Module):
    """TorchSparse 2.1's BEV modules: not reproduced (they do not fit its own 2.1 coordinate layout)."""

    def __init__(self, *args, **kwargs) -> None:
        raise NotImplementedError(
            f"torchsparse.nn.{type(self).__name__} is not supported by torchsparse_lite: in TorchSparse 2.1 it "
            "still reads the batch index from coordinate column 3 and divides coordinates by the tensor stride "
            "(the 2.0 layout; mit-han-lab/torchsparse#296), so its 2.1 behaviour is not well defined. For a "
            "bird's-eye view use torchsparse_lite.nn.ToBEV (height folded into channels, [B, C*Z, X, Y]) on "
            "x.to_native(), followed by a dense nn.Conv2d"
        )


class ToBEVConvolution(_Unsupported):
    pass


class ToDenseBEVConvolution(_Unsupported):
    pass


class ToBEVHeightCompression(_Unsupported):
    pass


class ToBEVReduction(_Unsupported):
    pass
