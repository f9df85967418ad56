"""KITTI object-detection data: velodyne scans, ``label_2`` boxes and ``calib`` files.

KITTI labels live in the rectified camera frame (x right, y down, z forward)
with the box's *bottom* centre, sizes (h, w, l) and ``rotation_y`` about the
camera's y axis. :func:`camera_boxes_to_lidar` brings them to the LiDAR frame
(x forward, y left, z up) as geometric-centre boxes ``(x, y, z, l, w, h, yaw)``:

* ``p_lidar = inv(Tr_velo_to_cam) @ inv(R0_rect) @ p_rect`` (4x4 homogeneous),
* ``z += h / 2`` (bottom centre -> geometric centre),
* ``yaw_lidar = -rotation_y - pi / 2`` (wrapped to [-pi, pi)).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._records import PathLike, as_path
from .kitti import load_kitti_bin

KITTI_TO_DETECTION = {"Car": "car", "Pedestrian": "pedestrian", "Cyclist": "cyclist"}


@dataclass(frozen=True)
class KittiCalib:
    """The two matrices the LiDAR <-> camera conversion needs (4x4 homogeneous, float64)."""

    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray

    @property
    def lidar_to_rect(self) -> np.ndarray:
        """4x4 matrix taking LiDAR points to the rectified camera frame."""
        return self.R0_rect @ self.Tr_velo_to_cam

    @property
    def rect_to_lidar(self) -> np.ndarray:
        """4x4 matrix taking rectified-camera points to the LiDAR frame."""
        return np.linalg.inv(self.Tr_velo_to_cam) @ np.linalg.inv(self.R0_rect)


def _homogeneous(m: np.ndarray, rows: int, cols: int, name: str) -> np.ndarray:
    if m.size != rows * cols:
        raise ValueError(f"calib entry {name} has {m.size} values, expected {rows * cols}")
    out = np.eye(4)
    out[:rows, :cols] = m.reshape(rows, cols)
    return out


def parse_calib(text: str) -> KittiCalib:
    """Parse a KITTI ``calib/*.txt`` (lines ``NAME: v1 v2 ...``); needs ``R0_rect`` and ``Tr_velo_to_cam``."""
    entries: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, values = line.split(":", 1)
        if values.strip():
            entries[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
    r0 = entries.get("R0_rect", entries.get("R_rect"))
    tr = entries.get("Tr_velo_to_cam", entries.get("Tr_velo_cam"))
    if r0 is None or tr is None:
        raise ValueError(f"calib must contain R0_rect and Tr_velo_to_cam, found keys {sorted(entries)}")
    return KittiCalib(_homogeneous(r0, 3, 3, "R0_rect"), _homogeneous(tr, 3, 4, "Tr_velo_to_cam"))


def load_calib(path: PathLike) -> KittiCalib:
    """Read and parse a KITTI calibration file."""
    return parse_calib(as_path(path, "calib path").read_text())


@dataclass(frozen=True)
class KittiLabel:
    """One ``label_2`` line: class name and its camera-frame box."""

    name: str
    truncated: float
    occluded: int
    hwl: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float


def parse_labels(text: str) -> list[KittiLabel]:
    """Parse the lines of a ``label_2/*.txt`` file (15 or 16 fields each)."""
    out = []
    for n, line in enumerate(text.splitlines()):
        f = line.split()
        if not f:
            continue
        if len(f) not in (15, 16):
            raise ValueError(f"label line {n + 1} has {len(f)} fields, expected 15 (or 16 with a score): {line!r}")
        v = [float(x) for x in f[1:15]]
        out.append(KittiLabel(f[0], v[0], int(v[1]), (v[7], v[8], v[9]), (v[10], v[11], v[12]), v[13]))
    return out


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.mod(a + math.pi, 2 * math.pi) - math.pi


def camera_boxes_to_lidar(
    location: np.ndarray, hwl: np.ndarray, rotation_y: np.ndarray, calib: KittiCalib
) -> np.ndarray:
    """KITTI camera boxes -> LiDAR boxes.

    Args:
        location: [B, 3] bottom centres in the rectified camera frame.
        hwl: [B, 3] (height, width, length).
        rotation_y: [B] yaw about the camera's y axis.
        calib: the frame's calibration.

    Returns:
        [B, 7] float32 (x, y, z, l, w, h, yaw) with the geometric centre in the LiDAR frame.
    """
    loc = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    dims = np.asarray(hwl, dtype=np.float64).reshape(-1, 3)
    ry = np.asarray(rotation_y, dtype=np.float64).reshape(-1)
    homo = np.concatenate([loc, np.ones((loc.shape[0], 1))], axis=1)
    xyz = (homo @ calib.rect_to_lidar.T)[:, :3]
    h, w, l = dims[:, 0], dims[:, 1], dims[:, 2]
    xyz[:, 2] += h / 2
    boxes = np.stack([xyz[:, 0], xyz[:, 1], xyz[:, 2], l, w, h, _wrap(-ry - math.pi / 2)], axis=1)
    return boxes.astype(np.float32)


def lidar_boxes_to_camera(boxes: np.ndarray, calib: KittiCalib) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`camera_boxes_to_lidar`: [B, 7] -> (location [B, 3], hwl [B, 3], rotation_y [B])."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    bottom = b[:, :3].copy()
    bottom[:, 2] -= b[:, 5] / 2
    homo = np.concatenate([bottom, np.ones((b.shape[0], 1))], axis=1)
    loc = (homo @ calib.lidar_to_rect.T)[:, :3]
    hwl = np.stack([b[:, 5], b[:, 4], b[:, 3]], axis=1)
    return loc, hwl, _wrap(-b[:, 6] - math.pi / 2)


def load_boxes_json(path: PathLike, classes: tuple[str, ...] = ("car", "pedestrian", "cyclist")) -> tuple:
    """Read LiDAR-frame boxes from a JSON file ``{"boxes": [{"class", "center_xyz", "size_lwh", "yaw"}, ...]}``.

    Returns:
        (boxes [B, 7] float32, labels [B] int64 into ``classes``); other classes are dropped.
    """
    data = json.loads(as_path(path, "boxes path").read_text())
    rows, labels = [], []
    for i, b in enumerate(data.get("boxes", [])):
        name = KITTI_TO_DETECTION.get(b["class"], str(b["class"]).lower())
        if name not in classes:
            continue
        if len(b["center_xyz"]) != 3 or len(b["size_lwh"]) != 3:
            raise ValueError(f"{path}: box {i} needs 3 values in center_xyz and size_lwh")
        rows.append([*b["center_xyz"], *b["size_lwh"], b["yaw"]])
        labels.append(classes.index(name))
    return np.array(rows, dtype=np.float32).reshape(-1, 7), np.array(labels, dtype=np.int64)


class KittiDetection:
    """KITTI object split laid out as ``root/{velodyne,label_2,calib}/NNNNNN.{bin,txt}``.

    Args:
        root: folder holding ``velodyne``, ``label_2`` and ``calib`` (e.g. ``.../object/training``).
        ids: frame ids to use (default: every ``velodyne/*.bin`` that has a label and a calib).
        classes: detection class names; KITTI's Car / Pedestrian / Cyclist map to them, others are dropped.

    Items are dicts: ``points`` [N, 4] float32, ``boxes`` [B, 7] float32 (LiDAR
    frame, geometric centre), ``labels`` [B] int64, ``name`` (frame id).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ids: list[str] | None = None,
        classes: tuple[str, ...] = ("car", "pedestrian", "cyclist"),
    ) -> None:
        self.root = Path(root)
        for sub in ("velodyne", "label_2", "calib"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"KITTI root {self.root} has no {sub}/ folder; point root at .../training")
        if ids is None:
            stems = sorted(p.stem for p in (self.root / "velodyne").glob("*.bin"))
            ids = [
                s
                for s in stems
                if (self.root / "label_2" / f"{s}.txt").is_file() and (self.root / "calib" / f"{s}.txt").is_file()
            ]
        if not ids:
            raise ValueError(f"no KITTI frames with velodyne, label_2 and calib files under {self.root}")
        self.ids = list(ids)
        self.classes = tuple(classes)

    def __len__(self) -> int:
        return len(self.ids)

    def boxes(self, frame: str) -> tuple[np.ndarray, np.ndarray]:
        """(boxes [B, 7], labels [B]) of one frame in the LiDAR frame."""
        labels = parse_labels((self.root / "label_2" / f"{frame}.txt").read_text())
        keep = [lab for lab in labels if KITTI_TO_DETECTION.get(lab.name) in self.classes]
        calib = load_calib(self.root / "calib" / f"{frame}.txt")
        if not keep:
            return np.zeros((0, 7), dtype=np.float32), np.zeros(0, dtype=np.int64)
        loc = np.array([k.location for k in keep])
        hwl = np.array([k.hwl for k in keep])
        boxes = camera_boxes_to_lidar(loc, hwl, np.array([k.rotation_y for k in keep]), calib)
        ids = np.array([self.classes.index(KITTI_TO_DETECTION[k.name]) for k in keep], dtype=np.int64)
        return boxes, ids

    def __getitem__(self, index: int) -> dict:
        frame = self.ids[index]
        points = load_kitti_bin(self.root / "velodyne" / f"{frame}.bin")
        boxes, labels = self.boxes(frame)
        return {"points": points, "boxes": boxes, "labels": labels, "name": frame}
