"""Voxelization of labelled point clouds for segmentation (majority-vote voxel labels)."""

from __future__ import annotations

import numpy as np
import torch

from torchsparse_lite.utils.quantize import sparse_quantize

IGNORE_INDEX = 255


def majority_labels(inverse: torch.Tensor, labels: torch.Tensor, num_voxels: int, num_classes: int) -> torch.Tensor:
    """Most frequent non-ignored label of each voxel ([M] int64; 255 where all its points are ignored).

    Args:
        inverse: [N] int64 voxel row of every point.
        labels: [N] int64 point labels in 0..num_classes-1 or 255.
        num_voxels: M.
        num_classes: C.
    """
    lab = labels.numpy()
    inv = inverse.numpy()
    valid = lab != IGNORE_INDEX
    if ((lab[valid] < 0) | (lab[valid] >= num_classes)).any():
        raise ValueError(f"labels must lie in 0..{num_classes - 1} or be {IGNORE_INDEX}")
    counts = np.bincount(inv[valid] * num_classes + lab[valid], minlength=num_voxels * num_classes)
    counts = counts.reshape(num_voxels, num_classes)
    best = np.where(counts.sum(1) > 0, counts.argmax(1), IGNORE_INDEX)
    return torch.from_numpy(best.astype(np.int64))


def voxelize_points(
    points: np.ndarray, labels: np.ndarray | None, voxel_size: float, num_classes: int
) -> dict[str, torch.Tensor]:
    """Quantize one labelled scan.

    Args:
        points: [N, 4] float (x, y, z, intensity), metres, sensor at the origin.
        labels: [N] int64 (0..C-1, 255 ignore) or None (all ignored).
        voxel_size: voxel edge (metres).
        num_classes: C.

    Returns:
        dict with ``coords`` int32 [M, 3] (>= 0), ``feats`` float32 [M, 4]
        (per-voxel mean of x, y, z in metres relative to the sensor, and of
        intensity), ``labels`` int64 [M] (majority vote), ``inverse`` int64
        [N] (point -> voxel row; ``voxel_pred[inverse]`` scores every point),
        ``point_labels`` int64 [N].
    """
    pts = torch.as_tensor(np.ascontiguousarray(points[:, :4]), dtype=torch.float32)
    if pts.dim() != 2 or pts.shape[1] != 4:
        raise ValueError(f"points must have shape [N, 4] (x, y, z, intensity), got {list(points.shape)}")
    q = sparse_quantize(pts[:, :3], voxel_size)
    m = q.coords.shape[0]
    sums = torch.zeros(m, 4, dtype=torch.float64).index_add_(0, q.inverse, pts.to(torch.float64))
    counts = torch.bincount(q.inverse, minlength=m).to(torch.float64)
    feats = (sums / counts[:, None]).to(torch.float32)
    if labels is None:
        point_labels = torch.full((pts.shape[0],), IGNORE_INDEX, dtype=torch.int64)
    else:
        point_labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if point_labels.shape != (pts.shape[0],):
            raise ValueError(f"labels must have shape [{pts.shape[0]}], got {list(point_labels.shape)}")
    return {
        "coords": q.coords,
        "feats": feats,
        "labels": majority_labels(q.inverse, point_labels, m, num_classes),
        "inverse": q.inverse,
        "point_labels": point_labels,
    }
