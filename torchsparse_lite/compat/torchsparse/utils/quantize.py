"""``torchsparse.utils.quantize.sparse_quantize`` (TorchSparse 2.x, numpy in and out).

``coords = floor(points / voxel_size)`` (int32, *not* shifted: TorchSparse's
examples subtract ``coords.min(0)`` first), deduplicated; rows come out in
lexicographic (x, y, z) order, ``indices`` picks the first point of each
voxel and ``inverse_indices`` maps every point to its voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["sparse_quantize"]


def _voxel_size(voxel_size: float | Sequence[float]) -> np.ndarray:
    if isinstance(voxel_size, (bool, str, bytes)):
        raise TypeError(f"voxel_size must be a number or 3 numbers, got {voxel_size!r}")
    vs = np.asarray(voxel_size, dtype=np.float64).reshape(-1)
    if vs.size == 1:
        vs = np.repeat(vs, 3)
    if vs.size != 3 or not np.all(np.isfinite(vs)) or not np.all(vs > 0):
        raise ValueError(f"voxel_size must be a positive number or 3 of them, got {voxel_size!r}")
    return vs


def _ravel(coords: np.ndarray) -> np.ndarray:
    """[N] int64 keys ordering rows lexicographically (mixed radix over the per-axis extents)."""
    x = coords.astype(np.int64) - coords.min(axis=0).astype(np.int64)
    extent = x.max(axis=0) + 1
    if float(np.prod(extent.astype(np.float64))) >= 2.0**63:
        raise ValueError("the quantized scene is too large to index; increase voxel_size or crop the points")
    key = np.zeros(x.shape[0], dtype=np.int64)
    for axis in range(x.shape[1]):
        key = key * extent[axis] + x[:, axis]
    return key


def sparse_quantize(
    coords: np.ndarray | torch.Tensor,
    voxel_size: float | Sequence[float] = 1,
    *,
    return_index: bool = False,
    return_inverse: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Voxelize ``coords`` [N, 3] (float or int): unique ``floor(coords / voxel_size)`` as int32.

    Returns:
        ``coords`` [M, 3] int32, plus ``indices`` [M] and/or ``inverse_indices``
        [N] (int64) when asked, as a list (TorchSparse's order).
    """
    if isinstance(coords, torch.Tensor):
        coords = coords.detach().cpu().numpy()
    if not isinstance(coords, np.ndarray):
        raise TypeError(f"coords must be a numpy array (or tensor), got {type(coords).__name__}")
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"coords must have shape [N, 3] (x, y, z), got {list(coords.shape)}")
    if coords.dtype.kind not in "iuf":
        raise TypeError(f"coords must be numeric, got dtype {coords.dtype}")
    scaled = np.floor(coords / _voxel_size(voxel_size))
    if not np.all(np.isfinite(scaled)) or (scaled.size and np.abs(scaled).max() > np.iinfo(np.int32).max):
        raise ValueError("coords / voxel_size is not finite or overflows int32; check the points and voxel_size")
    grid = scaled.astype(np.int32)
    if grid.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        indices, inverse = empty, empty
    else:
        _, indices, inverse = np.unique(_ravel(grid), return_index=True, return_inverse=True)
    outputs = [grid[indices]]
    if return_index:
        outputs.append(indices.astype(np.int64))
    if return_inverse:
        outputs.append(inverse.reshape(-1).astype(np.int64))
    return outputs[0] if len(outputs) == 1 else outputs
