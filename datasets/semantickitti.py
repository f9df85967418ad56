"""SemanticKITTI scans and labels with the standard 19-class training map.

A ``.label`` file holds one uint32 per point: the low 16 bits are the raw
semantic id (0, 1, 10, ..., 259), the high 16 bits the instance id.
:data:`LEARNING_MAP` is the ``learning_map`` of the official
``semantic-kitti.yaml`` shifted so that train ids are 0..18 and the
"unlabeled"/"outlier"/"other-*" ids map to 255 (ignore).
"""

from __future__ import annotations

import numpy as np

from ._records import PathLike, as_path, read_records
from .kitti import load_kitti_bin

IGNORE_INDEX = 255

SEMANTICKITTI_CLASSES: tuple[str, ...] = (
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)
"""The 19 evaluated classes, indexed by train id."""

# Official learning_map (raw id -> 0..19, 0 = ignore); stored below as raw id -> train id - 1.
_OFFICIAL = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17,
    80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip

LEARNING_MAP: dict[int, int] = {raw: (v - 1 if v else IGNORE_INDEX) for raw, v in _OFFICIAL.items()}
"""Raw SemanticKITTI semantic id -> train id (0..18, 255 = ignore)."""


def learning_lut() -> np.ndarray:
    """[260] int64 lookup table raw id -> train id; ids absent from the map hold -1."""
    lut = np.full(max(LEARNING_MAP) + 1, -1, dtype=np.int64)
    for raw, train in LEARNING_MAP.items():
        lut[raw] = train
    return lut


def map_labels(raw: np.ndarray, source: str = "labels") -> np.ndarray:
    """Map raw semantic ids [N] (any int dtype) to train ids [N] int64 (0..18, 255).

    Raises:
        ValueError: an id not in :data:`LEARNING_MAP` (names ``source`` and the ids).
    """
    raw = np.asarray(raw).astype(np.int64, copy=False)
    lut = learning_lut()
    bad = (raw < 0) | (raw >= lut.shape[0])
    out = np.where(bad, -1, lut[np.clip(raw, 0, lut.shape[0] - 1)])
    if (out < 0).any():
        ids = np.unique(raw[out < 0])[:10].tolist()
        raise ValueError(f"{source}: unknown SemanticKITTI semantic id(s) {ids}; the label file is corrupt")
    return out


def load_semantickitti_labels(path: PathLike, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``.label`` file.

    Args:
        path: file of little-endian uint32, one per point.
        num_points: expected count (the scan's); mismatch raises ValueError.

    Returns:
        labels: [N] int64 train ids (0..18, 255 ignore).
        instances: [N] int64 instance ids (high 16 bits).
    """
    raw = read_records(path, 1, "<u4", what="label")[:, 0]
    if num_points is not None and raw.shape[0] != num_points:
        raise ValueError(
            f"{as_path(path)}: {raw.shape[0]} labels but the scan has {num_points} points; "
            "the label file does not belong to this scan or is truncated"
        )
    return map_labels(raw & 0xFFFF, str(path)), (raw >> 16).astype(np.int64)


def load_semantickitti(bin_path: PathLike, label_path: PathLike | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a SemanticKITTI scan and (optionally) its labels.

    Args:
        bin_path: velodyne ``.bin`` (float32 x, y, z, remission).
        label_path: matching ``.label`` file, or None.

    Returns:
        points: [N, 4] float32.
        labels: [N] int64 train ids (0..18, 255 = ignore), or None without ``label_path``.

    Raises:
        ValueError: truncated/corrupt scan or label file, label count != point
            count, unknown raw ids; messages name the file.
    """
    points = load_kitti_bin(bin_path)
    if label_path is None:
        return points, None
    labels, _ = load_semantickitti_labels(label_path, points.shape[0])
    return points, labels
