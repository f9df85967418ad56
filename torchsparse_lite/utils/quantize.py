"""Voxelization of point clouds and batching of sparse tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..kmap.keys import MAX_COORD, check_coords, pack
from ..kmap.numpy_ops import unique_inverse
from ..tensor import SparseTensor, check_feats


class Quantized(NamedTuple):
    """Result of :func:`sparse_quantize`.

    Attributes:
        coords: [M, 3] int32 unique voxel coordinates (x, y, z), >= 0.
        index: [M] int64, one source point per voxel (``points[index]``).
        inverse: [N] int64, voxel row of every point (``voxel_pred[inverse]``).
        origin: [3] int64 voxel coordinate subtracted so that coords start at 0.
    """

    coords: torch.Tensor
    index: torch.Tensor
    inverse: torch.Tensor
    origin: torch.Tensor


def sparse_quantize(
    points: torch.Tensor | np.ndarray,
    voxel_size: float | Sequence[float],
    *,
    origin: Sequence[int] | None = None,
) -> Quantized:
    """Voxelize points: unique voxel coordinates plus index and inverse maps.

    Args:
        points: [N, >=3] float array; the first three columns are x, y, z.
        voxel_size: edge length (or three lengths) of a voxel.
        origin: voxel coordinate mapped to 0; default the per-axis minimum.

    Returns:
        :class:`Quantized`; ``index`` picks the first point of each voxel
        (deterministic), ``inverse`` maps every point to its voxel. Empty
        ``points`` (N = 0) give empty coords/index/inverse.
    """
    if not isinstance(points, (torch.Tensor, np.ndarray)):
        raise TypeError(f"points must be a torch.Tensor or numpy array, got {type(points).__name__}")
    pts = torch.as_tensor(points)
    if not pts.dtype.is_floating_point:
        raise TypeError(f"points must be a floating-point array, got {pts.dtype}; cast with .float()")
    if pts.dim() != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must have shape [N, >=3] (x, y, z first), got {list(pts.shape)}")
    vs = _voxel_size(voxel_size)
    base_given = None if origin is None else _origin(origin)
    if pts.shape[0] == 0:
        empty = torch.empty(0, dtype=torch.int64, device=pts.device)
        base = base_given if base_given is not None else torch.zeros(3, dtype=torch.int64)
        return Quantized(torch.empty(0, 3, dtype=torch.int32, device=pts.device), empty, empty, base)
    xyz = pts[:, :3].to(torch.float64)
    if not bool(torch.isfinite(xyz).all()):
        raise ValueError("points contains NaN or Inf coordinates; drop those points first")
    vs = vs.to(xyz.device)
    grid = torch.floor(xyz / vs)
    if float(grid.abs().max()) > 2**62:
        raise ValueError("points / voxel_size overflows int64; increase voxel_size or check the point units")
    grid = grid.to(torch.int64)
    base = grid.amin(0) if base_given is None else base_given.to(grid.device)
    grid = grid - base
    if int(grid.min()) < 0:
        raise ValueError(f"points lie below origin {base.tolist()} (in voxels); choose a smaller origin")
    if int(grid.max()) > MAX_COORD:
        raise ValueError(
            f"the scene spans {int(grid.max()) + 1} voxels on one axis, more than {MAX_COORD + 1}; "
            "increase voxel_size or crop the points"
        )
    coords4 = torch.cat([torch.zeros_like(grid[:, :1]), grid], dim=1)
    keys = pack(coords4)
    uniq, inverse, _ = unique_inverse(keys)
    n = keys.shape[0]
    # First point of each voxel: the smallest point index among its members.
    index = torch.full((uniq.shape[0],), n, dtype=torch.int64, device=keys.device).scatter_reduce_(
        0, inverse, torch.arange(n, device=keys.device), reduce="amin"
    )
    return Quantized(grid[index].to(torch.int32), index, inverse, base)


def _voxel_size(voxel_size: float | Sequence[float]) -> torch.Tensor:
    """[3] float64 positive finite voxel edge lengths from one or three numbers."""
    allowed = (int, float, Sequence, np.ndarray, torch.Tensor)
    if isinstance(voxel_size, (bool, str, bytes)) or not isinstance(voxel_size, allowed):
        raise TypeError(f"voxel_size must be a number or 3 numbers, got {type(voxel_size).__name__}")
    vs = torch.as_tensor(voxel_size, dtype=torch.float64).reshape(-1).cpu()
    if vs.numel() not in (1, 3):
        raise ValueError(f"voxel_size must be a number or 3 numbers, got {vs.numel()} values")
    if not bool(torch.isfinite(vs).all()) or not bool((vs > 0).all()):
        raise ValueError(f"voxel_size must be finite and > 0, got {voxel_size!r}")
    return vs.expand(3)


def _origin(origin: Sequence[int]) -> torch.Tensor:
    """[3] int64 voxel origin."""
    o = torch.as_tensor(origin)
    if o.dtype.is_floating_point or o.dtype == torch.bool:
        raise TypeError(f"origin must be 3 integers (a voxel coordinate), got dtype {o.dtype}")
    if o.numel() != 3:
        raise ValueError(f"origin must be 3 integers (x, y, z in voxels), got {o.numel()} values")
    return o.reshape(3).to(torch.int64).cpu()


def sparse_collate(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Stack single-sample tensors into one batch (batch index = list position).

    Each input must have batch index 0 everywhere, the same stride, channel
    count, dtype and device.
    """
    if isinstance(tensors, SparseTensor) or not tensors:
        raise ValueError("sparse_collate: tensors must be a non-empty list of SparseTensors")
    first = tensors[0]
    feats, coords = [], []
    for i, t in enumerate(tensors):
        if not isinstance(t, SparseTensor):
            raise TypeError(f"sparse_collate: tensors[{i}] is {type(t).__name__}, expected SparseTensor")
        if t.feats.dtype != first.feats.dtype or t.feats.device != first.feats.device:
            raise ValueError(
                f"sparse_collate: tensors[{i}] is {t.feats.dtype} on {t.feats.device}, tensors[0] is "
                f"{first.feats.dtype} on {first.feats.device}; convert them with .to() first"
            )
        if t.stride != first.stride:
            raise ValueError(f"sparse_collate: tensors[{i}] has stride {t.stride}, tensors[0] has {first.stride}")
        if t.feats.shape[1] != first.feats.shape[1]:
            raise ValueError(
                f"sparse_collate: tensors[{i}] has {t.feats.shape[1]} channels, tensors[0] has {first.feats.shape[1]}"
            )
        if len(t) and int(t.coords[:, 0].abs().max()) != 0:
            raise ValueError(
                f"sparse_collate: tensors[{i}] already has batch indices != 0; collate single samples (batch 0)"
            )
        c = t.coords.clone()
        c[:, 0] = i
        coords.append(c)
        feats.append(t.feats)
    coords_t = check_coords(torch.cat(coords), "coords")
    feats_t = torch.cat(feats)
    check_feats(feats_t, coords_t.shape[0])
    return SparseTensor(feats_t, coords_t, first.stride, validate=False)
