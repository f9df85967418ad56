"""ME's tensor operations (``MinkowskiOps.py``): ``cat``/``sum``/``mean``/``var`` of tensors on one
coordinate set, dense <-> sparse conversions and the stacking containers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .layers import MinkowskiLinear
from .tensor import MANAGER_DIFFERENT, SparseTensor


def _same_set(tensors: tuple, op: str) -> list[SparseTensor]:
    """The tensors of ``op(a, b, ...)`` / ``op((a, b, ...))``, checked to share manager and key."""
    if len(tensors) == 1 and isinstance(tensors[0], (tuple, list)):
        tensors = tuple(tensors[0])
    if len(tensors) < 2:
        raise ValueError(f"{op} needs at least two SparseTensors, got {len(tensors)}")
    for i, t in enumerate(tensors):
        if not isinstance(t, SparseTensor):
            raise TypeError(f"{op}: input {i} is {type(t).__name__}, expected a MinkowskiEngine SparseTensor")
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.device != first.device:
            raise ValueError(f"{op}: input {i} is on {t.device}, input 0 on {first.device}")
        if t.coordinate_manager is not first.coordinate_manager:
            raise ValueError(f"{op}: input {i}: {MANAGER_DIFFERENT}")
        if t.coordinate_map_key != first.coordinate_map_key:
            raise ValueError(
                f"{op}: SparseTensors must have the same coordinate_map_key (the same coordinates); input 0 has "
                f"{first.coordinate_map_key}, input {i} has {t.coordinate_map_key}"
            )
    return list(tensors)


def _tuple_op(tensors: tuple, fn: Callable[[list[torch.Tensor]], torch.Tensor], op: str) -> SparseTensor:
    ts = _same_set(tensors, op)
    return SparseTensor(
        fn([t.F for t in ts]), coordinate_map_key=ts[0].coordinate_map_key, coordinate_manager=ts[0].coordinate_manager
    )


def cat(*sparse_tensors: SparseTensor | Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate the features (channels) of tensors on the same coordinates: ``cat(a, b)`` or ``cat((a, b))``."""
    return _tuple_op(sparse_tensors, lambda xs: torch.cat(xs, dim=-1), "cat")


def _sum(*sparse_tensors: SparseTensor | Sequence[SparseTensor]) -> SparseTensor:
    """Element-wise sum of tensors on the same coordinates (``ME.sum``)."""
    return _tuple_op(sparse_tensors, lambda xs: torch.stack(xs).sum(0), "sum")


def mean(*sparse_tensors: SparseTensor | Sequence[SparseTensor]) -> SparseTensor:
    """Element-wise mean of tensors on the same coordinates."""
    return _tuple_op(sparse_tensors, lambda xs: torch.stack(xs).mean(0), "mean")


def var(*sparse_tensors: SparseTensor | Sequence[SparseTensor]) -> SparseTensor:
    """Element-wise (biased) variance of tensors on the same coordinates."""
    return _tuple_op(sparse_tensors, lambda xs: torch.stack(xs).var(0, unbiased=False), "var")


def dense_coordinates(shape: Sequence[int]) -> torch.Tensor:
    """[B * X * Y * Z, 4] int32 coordinates of every site of a dense ``[B, C, X, Y, Z]`` tensor (row-major)."""
    if len(shape) != 5:
        raise NotImplementedError(f"dense_coordinates supports 3D shapes [B, C, X, Y, Z] only, got {list(shape)}")
    b, _, *size = (int(v) for v in shape)
    axes = [torch.arange(n, dtype=torch.int32) for n in (b, *size)]
    return torch.stack([g.reshape(-1) for g in torch.meshgrid(*axes, indexing="ij")], dim=1)


def to_sparse(
    x: torch.Tensor, format: str | None = None, coordinates: object = None, device: torch.device | str | None = None
) -> SparseTensor:
    """The non-zero sites of a dense 3D tensor (format ``"BCXXX"`` by default, or e.g. ``"BXXXC"``)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        raise ValueError("to_sparse expects a 5D dense tensor (batch, channel and three spatial axes)")
    format = format or "BCXXX"
    if len(format) != 5 or format[0] != "B" or format.count("C") != 1 or format.count("X") != 3:
        raise ValueError(f"format must be 'B', one 'C' and three 'X' with B first, got {format!r}")
    channels_last = x.movedim(format.index("C"), -1)
    nonzero = channels_last.abs().sum(-1) != 0
    coords = torch.nonzero(nonzero).to(torch.int32)
    return SparseTensor(channels_last[nonzero], coords, device=device or x.device)


def to_sparse_all(dense_tensor: torch.Tensor, coordinates: torch.Tensor | None = None) -> SparseTensor:
    """Every site of a dense [B, C, X, Y, Z] tensor (differentiable w.r.t. the dense values)."""
    if coordinates is None:
        coordinates = dense_coordinates(dense_tensor.shape)
    feats = dense_tensor.permute(0, 2, 3, 4, 1).reshape(-1, dense_tensor.shape[1])
    return SparseTensor(feats, coordinates.to(dense_tensor.device), device=dense_tensor.device)


class MinkowskiToSparseTensor(nn.Module):
    """Dense [B, C, X, Y, Z] tensor -> SparseTensor (non-zero sites, or all with ``remove_zeros=False``)."""

    def __init__(self, remove_zeros: bool = True, coordinates: torch.Tensor | None = None) -> None:
        super().__init__()
        if remove_zeros and coordinates is not None:
            raise ValueError("coordinates can only be used with remove_zeros=False")
        self.remove_zeros, self.coordinates = remove_zeros, coordinates

    def forward(self, input: torch.Tensor) -> SparseTensor:
        if not isinstance(input, torch.Tensor):
            raise NotImplementedError("MinkowskiToSparseTensor supports dense torch.Tensor inputs (no TensorField)")
        return to_sparse(input) if self.remove_zeros else to_sparse_all(input, self.coordinates)


class MinkowskiToDenseTensor(nn.Module):
    """SparseTensor -> dense [B, C, X, Y, Z] tensor (``input.dense(shape)[0]``)."""

    def __init__(self, shape: torch.Size | None = None) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, input: SparseTensor) -> torch.Tensor:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"MinkowskiToDenseTensor expects a SparseTensor, got {type(input).__name__}")
        return input.dense(shape=self.shape)[0]


class MinkowskiToFeature(nn.Module):
    """SparseTensor -> its feature matrix."""

    def forward(self, x: SparseTensor) -> torch.Tensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"MinkowskiToFeature expects a SparseTensor, got {type(x).__name__}")
        return x.F


class MinkowskiStackCat(nn.Sequential):
    """Apply each child to the input and concatenate the outputs' features."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return cat([m(x) for m in self])


class MinkowskiStackSum(nn.Sequential):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return _sum([m(x) for m in self])


class MinkowskiStackMean(nn.Sequential):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return mean([m(x) for m in self])


class MinkowskiStackVar(nn.Sequential):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return var([m(x) for m in self])


__all__ = [
    "MinkowskiLinear",
    "MinkowskiStackCat",
    "MinkowskiStackMean",
    "MinkowskiStackSum",
    "MinkowskiStackVar",
    "MinkowskiToDenseTensor",
    "MinkowskiToFeature",
    "MinkowskiToSparseTensor",
    "cat",
    "dense_coordinates",
    "mean",
    "to_sparse",
    "to_sparse_all",
    "var",
]
