"""Benchmark workloads: real scans, synthetic scans, user folders, batching and tiling.

A :class:`Workload` is a named voxelized point set (``coords`` [N, 4] int32,
batch column included) plus where it came from. Real scans are read from a
data folder given by argument or by ``$TORCHSPARSE_LITE_DATA`` (see
:func:`data_root`; nothing outside the package is assumed); synthetic scans come from
``torchsparse_lite.datasets.synthetic.generate_scan`` when that module exists,
else from a small built-in ring-scan generator (seeded, LiDAR-like).
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils.quantize import sparse_quantize

REAL_SCANS: dict[str, tuple[str, int, float]] = {
    # name: (relative path, floats per point, voxel size in metres)
    "semantickitti_0.05": ("semantickitti/000000.bin", 4, 0.05),
    "semantickitti_0.1": ("semantickitti/000000.bin", 4, 0.1),
    "nuscenes_0.1": ("nuscenes/lidar_top_1532402927647951.bin", 5, 0.1),
    "kitti_0.05": ("kitti/000008.bin", 4, 0.05),
}


@dataclass(frozen=True)
class Workload:
    """A voxelized input.

    Attributes:
        name: short label used in tables.
        coords: [N, 4] int32 (batch, x, y, z), unique.
        source: ``"real"``, ``"synthetic"``, ``"builtin-synthetic"``, ``"folder"`` or ``"tiled"``.
        voxel_size: voxel edge in metres (None for synthetic grids).
        n_points: raw points before voxelization (None when unknown).
    """

    name: str
    coords: torch.Tensor
    source: str
    voxel_size: float | None = None
    n_points: int | None = None

    @property
    def n(self) -> int:
        return int(self.coords.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.coords[:, 0].max()) + 1 if self.n else 0


DATA_ENV = "TORCHSPARSE_LITE_DATA"


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The data folder holding the real scans (``semantickitti/``, ``nuscenes/``, ``kitti/``).

    Args:
        root: the folder; default ``$TORCHSPARSE_LITE_DATA``.

    Returns:
        The folder, or None when neither is set (no real scans then). A folder
        named by the variable is returned even when absent (its scans are then
        skipped like any missing file).

    Raises:
        ValueError: when ``root`` is given but is not a folder.
    """
    if root is not None:
        path = Path(root)
        if not path.is_dir():
            raise ValueError(f"root: data folder {path} does not exist; point it at the folder holding the scans")
        return path
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def voxelize(points: np.ndarray | torch.Tensor, voxel_size: float, batch: int = 0) -> torch.Tensor:
    """Points [P, >=3] -> unique voxel coords [N, 4] int32 with batch index ``batch``."""
    q = sparse_quantize(torch.as_tensor(points)[:, :3].float(), voxel_size)
    b = torch.full((q.coords.shape[0], 1), batch, dtype=torch.int32)
    return torch.cat([b, q.coords], dim=1)


def load_points(path: Path, floats_per_point: int = 4) -> np.ndarray:
    """Read a KITTI/nuScenes-style float32 ``.bin`` file as [P, floats_per_point]."""
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % floats_per_point:
        raise ValueError(f"{path}: {raw.size} floats is not a multiple of floats_per_point={floats_per_point}")
    return raw.reshape(-1, floats_per_point)


def real_workloads(names: list[str] | None = None, root: str | os.PathLike | None = None) -> list[Workload]:
    """The real scans ``names`` (default all of :data:`REAL_SCANS`) present under the data folder.

    Args:
        names: keys of :data:`REAL_SCANS`.
        root: the data folder (see :func:`data_root`; default ``$TORCHSPARSE_LITE_DATA``).

    Returns:
        One workload per scan found; scans absent from the folder, or all of
        them when no folder is set, are skipped (compare the names to see which).
    """
    wanted = list(REAL_SCANS) if names is None else list(names)
    unknown = [n for n in wanted if n not in REAL_SCANS]
    if unknown:
        raise ValueError(f"unknown real workload(s) {unknown}; choose from {sorted(REAL_SCANS)}")
    folder = data_root(root)
    if folder is None:
        return []
    out = []
    for name in wanted:
        rel, width, vs = REAL_SCANS[name]
        path = folder / rel
        if path.exists():
            pts = load_points(path, width)
            out.append(Workload(name, voxelize(pts, vs), "real", vs, int(pts.shape[0])))
    return out


def builtin_scan(seed: int, kind: str = "outdoor", n_points: int = 60_000) -> np.ndarray:
    """A seeded LiDAR-like scan [P, 4]: a ground plane, walls and boxes seen from rings.

    Used only when ``torchsparse_lite.datasets.synthetic`` is not installed.
    """
    if kind not in ("outdoor", "indoor"):
        raise ValueError(f"kind must be 'outdoor' or 'indoor', got {kind!r}")
    rng = np.random.default_rng(seed)
    reach = 40.0 if kind == "outdoor" else 6.0
    az = rng.uniform(0, 2 * np.pi, n_points)
    elev = rng.uniform(-0.4, 0.05 if kind == "outdoor" else 0.6, n_points)
    rng_dist = np.where(elev < -0.02, 1.7 / np.tan(-np.minimum(elev, -0.02)), reach)
    rng_dist = np.minimum(rng_dist, reach * rng.uniform(0.5, 1.0, n_points) if kind == "indoor" else reach)
    x, y = rng_dist * np.cos(az), rng_dist * np.sin(az)
    z = -1.7 + np.where(elev < -0.02, 0.0, rng_dist * np.tan(elev) + 1.7)
    pts = np.stack([x, y, z, rng.uniform(0, 1, n_points)], 1).astype(np.float32)
    return pts


def synthetic_points(seed: int, kind: str = "outdoor") -> tuple[np.ndarray, str]:
    """Points of one synthetic scan and the generator used (project's or built-in)."""
    try:
        mod = importlib.import_module("torchsparse_lite.datasets.synthetic")
        scan = mod.generate_scan(seed, kind=kind)
        pts = scan.points.numpy() if isinstance(scan.points, torch.Tensor) else np.asarray(scan.points)
        return pts.astype(np.float32), "synthetic"
    except (ImportError, AttributeError):
        return builtin_scan(seed, kind), "builtin-synthetic"


def synthetic_workloads(kinds: tuple[str, ...] = ("outdoor", "indoor"), seed: int = 0) -> list[Workload]:
    """One synthetic scan per kind (outdoor at 0.05 m, indoor at 0.02 m)."""
    out = []
    for kind in kinds:
        pts, src = synthetic_points(seed, kind)
        vs = 0.05 if kind == "outdoor" else 0.02
        out.append(Workload(f"synthetic_{kind}", voxelize(pts, vs), src, vs, int(pts.shape[0])))
    return out


def folder_workloads(folder: Path, voxel_size: float = 0.05, floats_per_point: int = 4,
                     limit: int = 4) -> list[Workload]:
    """Scans (``*.bin`` float32, or ``*.npy`` [P, >=3]) in a user folder, at most ``limit``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"scan folder {folder} does not exist; pass a folder of .bin or .npy scans")
    files = sorted([*folder.glob("*.bin"), *folder.glob("*.npy")])[:limit]
    if not files:
        raise ValueError(f"scan folder {folder} holds no .bin or .npy files")
    out = []
    for f in files:
        pts = np.load(f) if f.suffix == ".npy" else load_points(f, floats_per_point)
        out.append(Workload(f"{f.stem}_{voxel_size:g}", voxelize(pts, voxel_size), "folder", voxel_size,
                            int(pts.shape[0])))
    return out


def batched(w: Workload, batch_size: int) -> Workload:
    """``batch_size`` copies of a single-sample workload, batch indices 0..B-1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size == 1:
        return w
    reps = [w.coords.clone() for _ in range(batch_size)]
    for i, c in enumerate(reps):
        c[:, 0] = i
    n_pts = None if w.n_points is None else w.n_points * batch_size
    return Workload(f"{w.name}_b{batch_size}", torch.cat(reps), w.source, w.voxel_size, n_pts)


def tiled(w: Workload, target: int, layout: str = "space") -> Workload:
    """Grow or shrink a scan to exactly ``target`` voxels.

    Shrinking keeps a random subset (thinner sparsity). Growing repeats the
    scan: ``layout="space"`` side by side in x/y (one huge scene), or
    ``layout="batch"`` as batch samples 0, 1, ... (one batch of scans; the
    spatial extent stays that of one scan). Either way the local sparsity
    pattern, hence map entries per voxel, stays that of the real scan.
    """
    if target < 1:
        raise ValueError(f"target must be >= 1, got {target}")
    if layout not in ("space", "batch"):
        raise ValueError(f"layout must be 'space' or 'batch', got {layout!r}")
    c = w.coords[w.coords[:, 0] == 0]
    n = c.shape[0]
    if target <= n:
        g = torch.Generator().manual_seed(target)
        keep = torch.randperm(n, generator=g)[:target]
        out = c[torch.sort(keep).values]
    else:
        tiles = math.ceil(target / n)
        side = math.ceil(math.sqrt(tiles))
        span = c[:, 1:3].amax(0) + 2
        parts = []
        for t in range(tiles):
            if layout == "batch":
                shift = torch.tensor([t, 0, 0, 0], dtype=torch.int32)
            else:
                shift = torch.tensor([0, (t % side) * int(span[0]), (t // side) * int(span[1]), 0], dtype=torch.int32)
            parts.append(c + shift)
        out = torch.cat(parts)[:target]
    return Workload(f"{w.name}_n{out.shape[0]}", out.contiguous(), "tiled", w.voxel_size)
