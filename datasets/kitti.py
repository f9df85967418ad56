"""KITTI velodyne scans (``.bin``: float32 x, y, z, reflectance per point)."""

from __future__ import annotations

import numpy as np

from ._records import PathLike, read_records


def load_kitti_bin(path: PathLike) -> np.ndarray:
    """Read a KITTI / SemanticKITTI velodyne scan.

    Args:
        path: ``.bin`` file of little-endian float32 records (x, y, z, reflectance).

    Returns:
        [N, 4] float32 points in the LiDAR frame (metres; reflectance in [0, 1]).

    Raises:
        ValueError: size not a multiple of 16 bytes, empty file, or NaN/Inf values (names the file).
    """
    return read_records(path, 4, "<f4", what="KITTI point").astype(np.float32, copy=False)
