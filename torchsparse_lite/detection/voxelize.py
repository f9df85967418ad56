"""Points -> batched sparse voxel tensor on the detector's fixed grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..tensor import SparseTensor
from .config import DetectorConfig


def crop_points(points: torch.Tensor, point_range: Sequence[float]) -> torch.Tensor:
    """Keep the points with ``x0 <= x < x1`` (same for y, z). [N, C] -> [M, C]."""
    lo = torch.as_tensor(point_range[:3], dtype=points.dtype, device=points.device)
    hi = torch.as_tensor(point_range[3:], dtype=points.dtype, device=points.device)
    keep = ((points[:, :3] >= lo) & (points[:, :3] < hi)).all(dim=1)
    return points[keep]


def voxel_features(points: torch.Tensor, cfg: DetectorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-of-points voxel features of one scan.

    Args:
        points: [N, >=3] float (x, y, z[, intensity]) in the LiDAR frame.
        cfg: the detector configuration (grid and range).

    Returns:
        coords [M, 3] int32 voxel indices (x, y, z) inside ``cfg.grid_size`` and
        feats [M, 5] float32: mean point minus voxel centre (in voxels, 3),
        mean height normalised to [0, 1] over the range, mean intensity.
    """
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    if pts.dim() != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must have shape [N, >=3], got {list(pts.shape)}")
    pts = pts.to(torch.float32)
    if pts.shape[1] == 3:
        pts = torch.cat([pts, pts.new_zeros(pts.shape[0], 1)], dim=1)
    pts = crop_points(pts[:, :4], cfg.point_range)
    if pts.shape[0] == 0:
        return torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, cfg.in_channels)
    lo = torch.tensor(cfg.point_range[:3], dtype=torch.float32)
    vs = torch.tensor(cfg.voxel_size, dtype=torch.float32)
    grid = torch.tensor(cfg.grid_size, dtype=torch.int64)
    idx = torch.floor((pts[:, :3] - lo) / vs).to(torch.int64)
    idx = torch.minimum(idx.clamp(min=0), grid - 1)
    key = (idx[:, 0] * grid[1] + idx[:, 1]) * grid[2] + idx[:, 2]
    uniq, inverse = torch.unique(key, return_inverse=True)
    m = uniq.shape[0]
    counts = torch.bincount(inverse, minlength=m).to(torch.float32)[:, None]
    mean = torch.zeros(m, 4).index_add_(0, inverse, pts) / counts
    coords = torch.stack([uniq // (grid[1] * grid[2]), (uniq // grid[2]) % grid[1], uniq % grid[2]], dim=1)
    centre = lo + (coords.to(torch.float32) + 0.5) * vs
    z_norm = (mean[:, 2:3] - cfg.point_range[2]) / (cfg.point_range[5] - cfg.point_range[2])
    feats = torch.cat([(mean[:, :3] - centre) / vs, z_norm, mean[:, 3:4]], dim=1)
    return coords.to(torch.int32), feats


def voxelize_batch(points_list: Sequence[torch.Tensor], cfg: DetectorConfig) -> SparseTensor:
    """Voxelize a list of scans into one sparse tensor (batch index = list position).

    Returns:
        SparseTensor with feats [M, 5] and coords [M, 4] (batch, x, y, z), stride 1.
    """
    if len(points_list) == 0:
        raise ValueError("points_list is empty: pass at least one scan")
    feats, coords = [], []
    for b, pts in enumerate(points_list):
        c, f = voxel_features(pts, cfg)
        coords.append(torch.cat([torch.full((c.shape[0], 1), b, dtype=torch.int32), c], dim=1))
        feats.append(f)
    return SparseTensor(torch.cat(feats), torch.cat(coords), 1, spatial_range=cfg.grid_size)
