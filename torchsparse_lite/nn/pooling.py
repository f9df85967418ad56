"""Pooling and densification of sparse tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..kmap.geometry import ConvGeometry, triple
from ..tensor import SparseTensor
from .maps import layer_map, layer_output, output_stride


def zero_unreached(out: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """Rows of a max reduction [M, C] where [M] bool ``hit``, 0 in the rows that received nothing (-inf).

    Eagerly the select is skipped when every row was hit (the usual case); a
    traced graph cannot branch on ``hit`` and always selects (the same values).
    """
    if torch.compiler.is_compiling() or not bool(hit.all()):
        return torch.where(hit[:, None], out, torch.zeros_like(out))
    return out


class MaxPool3d(nn.Module):
    """Sparse max over each output's kernel window (only active inputs count).

    Output coordinates follow the same rule as a :class:`Conv3d` with the
    same geometry (the inputs themselves for stride 1).

    Semantics: inactive voxels are *absent*, not zero. An output takes the
    max over the active inputs of its window only, so with negative features
    it can be negative where a dense ``max_pool3d`` on the zero-filled grid
    would give 0; for non-negative features (e.g. after a ReLU) both agree.
    An output whose window holds no active input (possible with
    ``downsample_mode="minkowski"`` and a kernel smaller than the stride)
    gets 0, as the dense grid would.
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int] = 2,
        stride: int | Sequence[int] | None = None,
        dilation: int | Sequence[int] = 1,
        *,
        padding: int | Sequence[int] | None = None,
        kmap_builder: str | None = None,
        downsample_mode: str | None = None,
    ) -> None:
        super().__init__()
        stride3 = triple(kernel_size if stride is None else stride, "stride")
        mode = "submanifold" if stride3 == (1, 1, 1) else "conv"
        self.geometry = ConvGeometry(
            triple(kernel_size, "kernel_size"), stride3, triple(dilation, "dilation"), padding, mode
        )
        self.kmap_builder = kmap_builder
        self.downsample_mode = downsample_mode

    kernel_size = property(lambda self: self.geometry.kernel_size)
    stride = property(lambda self: self.geometry.stride)
    dilation = property(lambda self: self.geometry.dilation)
    padding = property(lambda self: self.geometry.padding)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"MaxPool3d expects x to be a SparseTensor, got {type(x).__name__}")
        kmap = layer_map(x, self.geometry, kmap_builder=self.kmap_builder, downsample_mode=self.downsample_mode)
        c = x.feats.shape[1]
        out = x.feats.new_full((kmap.n_out, c), float("-inf"))
        index = kmap.out_idx[:, None].expand(-1, c)
        out = out.scatter_reduce(0, index, x.feats.index_select(0, kmap.in_idx), reduce="amax", include_self=False)
        hit = torch.zeros(kmap.n_out, dtype=torch.bool, device=out.device)
        hit[kmap.out_idx] = True
        return layer_output(x, zero_unreached(out, hit), kmap, output_stride(x.stride, self.geometry))


def _per_sample(x: SparseTensor, reduce: str) -> torch.Tensor:
    """[B, C] mean or max per sample; a sample with no voxel gets zeros."""
    if not isinstance(x, SparseTensor):
        raise TypeError(f"global pooling expects x to be a SparseTensor, got {type(x).__name__}")
    batch = x.coords[:, 0].long()
    nb = x.batch_size
    c = x.feats.shape[1]
    if reduce == "mean":
        sums = x.feats.new_zeros(nb, c).index_add_(0, batch, x.feats)
        counts = torch.bincount(batch, minlength=nb).clamp_(min=1).to(x.feats.dtype)
        return sums / counts[:, None]
    out = x.feats.new_full((nb, c), float("-inf"))
    out = out.scatter_reduce(0, batch[:, None].expand(-1, c), x.feats, reduce="amax", include_self=False)
    return zero_unreached(out, torch.bincount(batch, minlength=nb) > 0)


class GlobalAvgPool(nn.Module):
    """Mean of the features of each sample -> dense [B, C]."""

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return _per_sample(x, "mean")


class GlobalMaxPool(nn.Module):
    """Max of the features of each sample -> dense [B, C]."""

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return _per_sample(x, "amax")


class ToDense(nn.Module):
    """Sparse tensor -> dense [B, C, X, Y, Z] grid (zeros where inactive).

    Args:
        spatial_range: fixed grid size (X, Y, Z); default the tensor's extent.
    """

    def __init__(self, spatial_range: Sequence[int] | None = None) -> None:
        super().__init__()
        self.spatial_range = None if spatial_range is None else tuple(int(v) for v in spatial_range)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"ToDense expects x to be a SparseTensor, got {type(x).__name__}")
        return x.dense(self.spatial_range)
