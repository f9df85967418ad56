"""nuScenes LiDAR sweeps (``.pcd.bin``: float32 x, y, z, intensity, ring index per point)."""

from __future__ import annotations

import numpy as np

from ._records import PathLike, read_records


def load_nuscenes_bin(path: PathLike) -> np.ndarray:
    """Read a nuScenes LIDAR_TOP sweep.

    Args:
        path: ``.pcd.bin`` (or ``.bin``) file of little-endian float32 records
            (x, y, z, intensity, ring index).

    Returns:
        [N, 5] float32 points; intensity is in 0..255, ring in 0..31.

    Raises:
        ValueError: size not a multiple of 20 bytes, empty file, or NaN/Inf values (names the file).
    """
    return read_records(path, 5, "<f4", what="nuScenes point").astype(np.float32, copy=False)
