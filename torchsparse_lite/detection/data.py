"""Detection samples from the synthetic generator, KITTI folders, single files, or tiny hand-made scenes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm


@dataclass
class DetectionSample:
    """One scan with its boxes.

    Attributes:
        points: [N, 4] float32 (x, y, z, intensity), LiDAR frame.
        boxes: [B, 7] float32 (x, y, z, l, w, h, yaw), geometric centre.
        labels: [B] int64 class ids.
        name: identifier (seed or frame id).
    """

    points: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    name: str


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of points inside each box: points [N, >=3], boxes [B, 7] -> [B] int64."""
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    out = np.zeros(len(boxes), dtype=np.int64)
    for i, b in enumerate(np.asarray(boxes, dtype=np.float64)):
        d = pts - b[:3]
        c, s = math.cos(b[6]), math.sin(b[6])
        lx = c * d[:, 0] + s * d[:, 1]
        ly = -s * d[:, 0] + c * d[:, 1]
        out[i] = int(((np.abs(lx) <= b[3] / 2) & (np.abs(ly) <= b[4] / 2) & (np.abs(d[:, 2]) <= b[5] / 2)).sum())
    return out


def filter_boxes(sample: DetectionSample, point_range: Sequence[float], min_points: int = 0) -> DetectionSample:
    """Keep the boxes whose centre lies in ``point_range`` (x, y) and that hold >= ``min_points`` points."""
    b = sample.boxes
    keep = (b[:, 0] >= point_range[0]) & (b[:, 0] < point_range[3]) & (b[:, 1] >= point_range[1])
    keep &= b[:, 1] < point_range[4]
    if min_points > 0 and len(b):
        keep &= points_in_boxes(sample.points, b) >= min_points
    return DetectionSample(sample.points, b[keep], sample.labels[keep], sample.name)


def toy_sample(seed: int, num_objects: int = 6, extent: float = 20.0) -> DetectionSample:
    """A tiny hand-made scene: a noisy ground plane plus hollow boxes (cars, pedestrians, cyclists).

    Object surfaces (four sides and the roof) are sampled densely, so any
    working detector finds them; meant for fast tests and smoke runs.
    """
    rng = np.random.default_rng(seed)
    g = rng.uniform(-extent, extent, size=(4000, 2))
    ground = np.column_stack([g, rng.normal(-1.7, 0.02, len(g)), rng.uniform(0.0, 0.2, len(g))])
    sizes = {0: (4.2, 1.8, 1.5), 1: (0.7, 0.7, 1.75), 2: (1.8, 0.6, 1.7)}
    boxes, labels, parts = [], [], [ground]
    while len(boxes) < num_objects:
        cls = int(rng.choice(3, p=(0.6, 0.2, 0.2)))
        l, w, h = (s * rng.uniform(0.9, 1.1) for s in sizes[cls])
        x, y = rng.uniform(-extent + 3, extent - 3, size=2)
        if any(math.hypot(x - b[0], y - b[1]) < 5.0 for b in boxes):
            continue
        yaw = float(rng.uniform(-math.pi, math.pi))
        box = np.array([x, y, -1.7 + h / 2, l, w, h, yaw], dtype=np.float32)
        n = int(120 * (l + w) * h) + 40
        u = rng.uniform(-0.49, 0.49, size=(n, 3))  # surfaces 1 % inside the box
        face = rng.integers(0, 5, n)
        u[face == 0, 0], u[face == 1, 0] = 0.49, -0.49
        u[face == 2, 1], u[face == 3, 1] = 0.49, -0.49
        u[face == 4, 2] = 0.49
        local = u * np.array([l, w, h])
        c, s = math.cos(yaw), math.sin(yaw)
        xyz = np.column_stack(
            [c * local[:, 0] - s * local[:, 1] + x, s * local[:, 0] + c * local[:, 1] + y, local[:, 2] + box[2]]
        )
        parts.append(np.column_stack([xyz, np.full(n, 0.3 + 0.2 * cls)]))
        boxes.append(box)
        labels.append(cls)
    points = np.concatenate(parts).astype(np.float32)
    return DetectionSample(points, np.stack(boxes), np.array(labels, dtype=np.int64), f"toy-{seed}")


def synthetic_sample(seed: int) -> DetectionSample:
    """An outdoor scan of ``torchsparse_lite.datasets.synthetic.generate_scan`` with its boxes."""
    from ..datasets.synthetic import generate_scan  # noqa: PLC0415 - heavy generator, imported on use

    scan = generate_scan(seed, kind="outdoor")
    return DetectionSample(scan.points.astype(np.float32), scan.boxes, scan.box_labels, f"synthetic-{seed}")


def kitti_samples(root: str, ids: Sequence[str] | None = None) -> list[DetectionSample]:
    """Frames of a KITTI object folder (``root/{velodyne,label_2,calib}``)."""
    from ..datasets.kitti_detection import KittiDetection  # noqa: PLC0415

    ds = KittiDetection(root, list(ids) if ids is not None else None)
    items = [ds[i] for i in tqdm(range(len(ds)), desc="load kitti", leave=False)]
    return [DetectionSample(d["points"], d["boxes"], d["labels"], d["name"]) for d in items]


def file_sample(points_path: str, boxes_json: str | None = None) -> DetectionSample:
    """A KITTI-format ``.bin`` scan, with LiDAR-frame boxes from a JSON file when given."""
    from ..datasets.kitti import load_kitti_bin  # noqa: PLC0415
    from ..datasets.kitti_detection import load_boxes_json  # noqa: PLC0415

    points = load_kitti_bin(points_path)
    if boxes_json is None:
        boxes, labels = np.zeros((0, 7), np.float32), np.zeros(0, np.int64)
    else:
        boxes, labels = load_boxes_json(boxes_json)
    return DetectionSample(points, boxes, labels, str(points_path))


def make_samples(
    source: str, seeds: Sequence[int], desc: str = "scenes", progress: bool = True
) -> list[DetectionSample]:
    """Generate scenes of ``source`` ("synthetic" or "toy") for the given seeds, with a progress bar."""
    if source == "synthetic":
        fn = synthetic_sample
    elif source == "toy":
        fn = toy_sample
    else:
        raise ValueError(f"source must be 'synthetic' or 'toy', got {source!r}")
    return [fn(int(s)) for s in tqdm(list(seeds), desc=desc, leave=False, disable=not progress)]


def augment_sample(sample: DetectionSample, transform, rng: np.random.Generator) -> DetectionSample:
    """Apply a ``torchsparse_lite.datasets.augment`` transform to points and boxes together."""
    pts, boxes = transform(sample.points, sample.boxes, rng=rng)
    return DetectionSample(pts.astype(np.float32), boxes.astype(np.float32), sample.labels, sample.name)
