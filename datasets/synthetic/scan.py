"""One synthetic scan: procedural scene + simulated sensor, deterministic from a seed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .classes import DETECTION_CLASSES, INDOOR_CLASSES, OUTDOOR_CLASSES
from .indoor import build_room
from .outdoor import Layout, build_street
from .raycast import RayCaster
from .sensor import form_returns, rgbd_panorama_rays, spinning_lidar_rays


@dataclass
class Scan:
    """A labelled point cloud with detection boxes.

    Attributes:
        points: [N, 4] float32 (x, y, z, intensity), sensor at the origin.
        labels: [N] int64 class ids into ``class_names`` (255 = ignore; none in synthetic scans).
        boxes: [B, 7] float32 (cx, cy, cz, l, w, h, yaw), geometric centre, yaw about +z.
        box_labels: [B] int64 indices into :data:`DETECTION_CLASSES`.
        box_num_points: [B] int64 points that hit each object.
        instances: [N] int64 box index of each point (-1: not an object).
        ring: [N] int64 beam index (outdoor) or image row (indoor) of each point.
        class_names: names of the semantic classes.
        kind: ``"outdoor"`` or ``"indoor"``.
    """

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    box_labels: np.ndarray
    box_num_points: np.ndarray
    instances: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ring: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    class_names: tuple[str, ...] = OUTDOOR_CLASSES
    kind: str = "outdoor"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.points.shape[0])


_OUTDOOR_DEFAULTS: dict[str, Any] = {
    "num_beams": 64,
    "num_azimuth": 1800,
    "min_range": 2.5,
    "max_range": 100.0,
    "range_noise": 0.012,
    "dropout": 0.03,
    "sensor_height": 1.73,
    "random_heading": True,
    "extent": 90.0,
    "num_moving_cars": None,
    "parked_prob": 0.55,
    "num_pedestrians": None,
    "num_cyclists": None,
    "ego_vehicle": True,
}
_INDOOR_DEFAULTS: dict[str, Any] = {
    "width": 160,
    "height": 160,
    "num_cameras": 4,
    "min_range": 0.3,
    "max_range": 12.0,
    "range_noise": 0.004,
    "dropout": 0.01,
    "sensor_height": None,
    "random_heading": True,
    "num_people": None,
}
_SENSOR_KEYS = {"num_beams", "num_azimuth", "width", "height", "num_cameras", "min_range", "max_range"}
_SENSOR_KEYS |= {"range_noise", "dropout", "random_heading"}


def scan_options(kind: str) -> dict[str, Any]:
    """Default options of :func:`generate_scan` for ``kind`` ("outdoor" or "indoor")."""
    if kind == "outdoor":
        return dict(_OUTDOOR_DEFAULTS)
    if kind == "indoor":
        return dict(_INDOOR_DEFAULTS)
    raise ValueError(f"kind must be 'outdoor' or 'indoor', got {kind!r}")


def _rotate(points: np.ndarray, boxes: np.ndarray, angle: float) -> None:
    c, s = math.cos(angle), math.sin(angle)
    x, y = points[:, 0].copy(), points[:, 1].copy()
    points[:, 0], points[:, 1] = c * x - s * y, s * x + c * y
    bx, by = boxes[:, 0].copy(), boxes[:, 1].copy()
    boxes[:, 0], boxes[:, 1] = c * bx - s * by, s * bx + c * by
    boxes[:, 6] = np.mod(boxes[:, 6] + angle + math.pi, 2 * math.pi) - math.pi


def generate_scan(seed: int, kind: str = "outdoor", **options: Any) -> Scan:
    """Generate one labelled scan, deterministic from ``seed``.

    ``kind="outdoor"``: a street (road, sidewalks, buildings, vegetation,
    poles, cars, pedestrians, cyclists) seen by a spinning 64-beam LiDAR
    1.73 m above the road: ring structure, density falling with range,
    occlusion; ~100 k points. ``kind="indoor"``: a furnished room seen by
    four pinhole depth cameras (RGB-D-like uniform image density), ~100 k
    points; intensity is a grey albedo.

    Args:
        seed: non-negative integer; equal seeds give identical scans.
        kind: "outdoor" or "indoor".
        **options: override the defaults listed by :func:`scan_options`
            (sensor resolution, ranges, noise, object counts, ...).

    Returns:
        :class:`Scan` with points [N, 4] float32, labels [N] int64, boxes [B, 7].
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    opts = scan_options(kind)
    unknown = sorted(set(options) - set(opts))
    if unknown:
        raise TypeError(f"generate_scan: unknown option(s) {unknown} for kind={kind!r}; valid: {sorted(opts)}")
    opts.update(options)
    scene_ss, sensor_ss, heading_ss = np.random.SeedSequence([int(seed), 0 if kind == "outdoor" else 1]).spawn(3)
    scene_rng = np.random.default_rng(scene_ss)
    scene_opts = {k: v for k, v in opts.items() if k not in _SENSOR_KEYS}
    if kind == "outdoor":
        layout: Layout = build_street(scene_rng, **scene_opts)
        dirs, ring = spinning_lidar_rays(
            opts["num_beams"], opts["num_azimuth"], phase=float(np.random.default_rng(sensor_ss).uniform(0, 0.01))
        )
        names = OUTDOOR_CLASSES
    else:
        layout = build_room(scene_rng, **scene_opts)
        dirs, ring = rgbd_panorama_rays(opts["width"], opts["height"], opts["num_cameras"])
        names = INDOOR_CLASSES
    hits = RayCaster(dirs).cast(layout.primitives, layout.ground_z, layout.ground)
    keep, points = form_returns(
        hits,
        dirs,
        np.random.default_rng(sensor_ss),
        min_range=float(opts["min_range"]),
        max_range=float(opts["max_range"]),
        range_noise=float(opts["range_noise"]),
        dropout=float(opts["dropout"]),
    )
    boxes = np.stack(layout.boxes).astype(np.float32) if layout.boxes else np.zeros((0, 7), np.float32)
    box_labels = np.asarray(layout.box_labels, dtype=np.int64).reshape(-1)
    instances = hits.instance[keep]
    if opts["random_heading"]:
        _rotate(points, boxes, float(np.random.default_rng(heading_ss).uniform(-math.pi, math.pi)))
    num_points = np.bincount(instances[instances >= 0], minlength=boxes.shape[0]).astype(np.int64)
    return Scan(
        points=points,
        labels=hits.label[keep].astype(np.int64),
        boxes=boxes,
        box_labels=box_labels,
        box_num_points=num_points,
        instances=instances,
        ring=ring[keep],
        class_names=names,
        kind=kind,
    )


__all__ = ["DETECTION_CLASSES", "INDOOR_CLASSES", "OUTDOOR_CLASSES", "Scan", "generate_scan", "scan_options"]
