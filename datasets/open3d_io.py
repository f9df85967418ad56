"""Generic point files: ``.ply`` / ``.pcd`` through open3d (optional), ``.bin`` by format name."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from ._records import PathLike, as_path
from .kitti import load_kitti_bin
from .nuscenes import load_nuscenes_bin

INSTALL_HINT = 'pip install "torchsparse_lite[viz]"'
BIN_FORMATS = ("kitti", "semantickitti", "nuscenes")


def require_open3d() -> ModuleType:
    """Import open3d lazily; ImportError with the install command when it is missing."""
    try:
        return importlib.import_module("open3d")
    except ImportError as exc:
        raise ImportError(f"reading .ply/.pcd files needs open3d, which is not installed; run {INSTALL_HINT}") from exc


def load_point_file(path: PathLike, fmt: str | None = None) -> np.ndarray:
    """Read a point cloud file.

    Args:
        path: ``.ply`` or ``.pcd`` (read with open3d), or ``.bin`` (needs ``fmt``).
        fmt: for ``.bin`` files: "kitti" / "semantickitti" ([N, 4]) or
            "nuscenes" ([N, 5]); ignored for ``.ply``/``.pcd`` unless it
            contradicts the suffix.

    Returns:
        float32 points: [N, 4] (x, y, z, intensity) for ``.ply``/``.pcd``,
        where intensity is the mean of the RGB colours (0 when the file has
        none); the loader's layout for ``.bin``.

    Raises:
        ImportError: ``.ply``/``.pcd`` without open3d (names the pip command).
        ValueError: unknown suffix or ``fmt``, an empty or non-finite cloud.
    """
    p = as_path(path)
    suffix = p.suffix.lower()
    if suffix == ".bin":
        if fmt in ("kitti", "semantickitti"):
            return load_kitti_bin(p)
        if fmt == "nuscenes":
            return load_nuscenes_bin(p)
        raise ValueError(f"{p}: a .bin file needs fmt in {BIN_FORMATS}, got fmt={fmt!r}")
    if suffix not in (".ply", ".pcd"):
        raise ValueError(f"{p}: unsupported suffix {suffix!r}; use .ply, .pcd or .bin (with fmt)")
    if fmt is not None and fmt.lower().lstrip(".") != suffix[1:]:
        raise ValueError(f"{p}: fmt={fmt!r} contradicts the suffix {suffix!r}; pass fmt=None")
    o3d = require_open3d()
    cloud = o3d.io.read_point_cloud(str(p))
    xyz = np.asarray(cloud.points, dtype=np.float32)
    if xyz.shape[0] == 0:
        raise ValueError(f"{p}: no points could be read; the file is empty or corrupt")
    if not np.isfinite(xyz).all():
        raise ValueError(f"{p}: the cloud contains NaN or Inf coordinates; the file is corrupt")
    if cloud.has_colors():
        inten = np.asarray(cloud.colors, dtype=np.float32).mean(axis=1, keepdims=True)
    else:
        inten = np.zeros((xyz.shape[0], 1), dtype=np.float32)
    return np.concatenate([xyz, inten], axis=1)


def save_point_file(path: PathLike, points: np.ndarray) -> Path:
    """Write [N, >=3] points to ``.ply`` / ``.pcd`` with open3d (column 4, if any, as grey colour)."""
    p = Path(path)
    if p.suffix.lower() not in (".ply", ".pcd"):
        raise ValueError(f"path must end in .ply or .pcd, got {p.name!r}")
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must have shape [N, >=3], got {list(pts.shape)}")
    o3d = require_open3d()
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(pts[:, :3].astype(np.float64))
    if pts.shape[1] > 3:
        grey = np.clip(pts[:, 3:4].astype(np.float64), 0.0, 1.0)
        cloud.colors = o3d.utility.Vector3dVector(np.repeat(grey, 3, axis=1))
    if not o3d.io.write_point_cloud(str(p), cloud):
        raise ValueError(f"open3d could not write {p}")
    return p
