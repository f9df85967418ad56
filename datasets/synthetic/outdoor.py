"""Procedural street scene: road, sidewalks, buildings, trees, poles, cars, pedestrians, cyclists.

The scene is laid out in a street frame (road along +x) around a sensor at the
origin; :func:`generate_scan` rotates the result to a random heading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .classes import DETECTION_CLASSES, IGNORE_INDEX, OUTDOOR_CLASSES, class_id
from .objects import car_size, cyclist_size, make_car, make_cyclist, make_pedestrian, person_size
from .primitives import Box, Cylinder, Ellipsoid, Primitive, Surface
from .raycast import GroundFn

_C = {name: class_id(OUTDOOR_CLASSES, name) for name in OUTDOOR_CLASSES}
_CAR, _PED, _CYC = (class_id(DETECTION_CLASSES, n) for n in DETECTION_CLASSES)
CURB = 0.14


@dataclass
class Layout:
    """Solids of a scene, its ground plane and its detection boxes ([B, 7] rows, labels)."""

    primitives: list[Primitive] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    box_labels: list[int] = field(default_factory=list)
    ground_z: float = 0.0
    ground: GroundFn | None = None
    occupied: list[tuple[float, float, float]] = field(default_factory=list)

    def free(self, x: float, y: float, radius: float) -> bool:
        """True when a disc of ``radius`` at (x, y) overlaps nothing placed so far."""
        return all(math.hypot(x - ox, y - oy) >= radius + orad for ox, oy, orad in self.occupied)

    def add_object(self, parts: list[Primitive], box: np.ndarray, det_label: int) -> None:
        self.primitives.extend(parts)
        self.boxes.append(box)
        self.box_labels.append(det_label)
        self.occupied.append((float(box[0]), float(box[1]), 0.5 * math.hypot(float(box[3]), float(box[4]))))


def _street_ground(yc: float, half_width: float) -> GroundFn:
    def ground(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy = np.abs(y - yc)
        road = dy <= half_width
        labels = np.where(road, _C["road"], _C["terrain"]).astype(np.int64)
        refl = np.where(road, 0.22, 0.33 + 0.06 * np.sin(0.7 * x) * np.cos(0.9 * y))
        centre_line = (dy < 0.07) & (np.mod(x, 6.0) < 3.0)
        edge_line = (dy > half_width - 0.35) & (dy < half_width - 0.2)
        refl = np.where(road & (centre_line | edge_line), 0.85, refl)
        return labels, refl

    return ground


def _surface(rng: np.random.Generator, name: str, refl: float, instance: int = -1, noise: float = 0.0) -> Surface:
    return Surface(_C[name], instance, float(np.clip(refl * rng.uniform(0.8, 1.2), 0.02, 1.0)), noise)


def _side_structures(rng: np.random.Generator, lay: Layout, yc: float, sign: float, edge: float, extent: float) -> None:
    """Buildings, bushes, trees and poles on one side of the street (``sign`` = +1 left, -1 right)."""
    g = lay.ground_z
    side_top = g + CURB
    x = -extent
    while x < extent:
        length = rng.uniform(8.0, 30.0)
        setback = rng.uniform(0.0, 4.0) if rng.random() < 0.65 else rng.uniform(4.0, 15.0)  # front yards
        depth, height = rng.uniform(6.0, 14.0), rng.uniform(4.0, 20.0)
        near = edge + setback
        cy = yc + sign * (near + depth / 2)
        lay.primitives.append(
            Box((x + length / 2, cy, g + height / 2), (length, depth, height), 0.0, _surface(rng, "building", 0.4))
        )
        if setback > 1.5 and rng.random() < 0.5:  # hedge in the front yard
            hy = yc + sign * (edge + setback / 2)
            hh = rng.uniform(0.6, 1.4)
            hedge = Box(
                (x + length / 2, hy, g + hh / 2),
                (length * 0.8, 0.8, hh),
                0.0,
                _surface(rng, "vegetation", 0.45, noise=0.05),
            )
            lay.primitives.append(hedge)
        x += length
        gap = rng.uniform(0.5, 3.0) if rng.random() < 0.6 else rng.uniform(5.0, 15.0)
        if gap > 4.0:  # bushes in the gap
            for _ in range(int(rng.integers(1, 4))):
                bx = x + rng.uniform(1.0, gap - 1.0)
                by = yc + sign * (edge + rng.uniform(1.5, 8.0))
                r = rng.uniform(0.6, 1.6)
                rz = rng.uniform(0.4, 1.2)
                lay.primitives.append(
                    Ellipsoid(
                        (bx, by, g + rz * 0.8),
                        (r, r * rng.uniform(0.7, 1.3), rz),
                        _surface(rng, "vegetation", 0.45, noise=0.06),
                    )
                )
        x += gap
    # Trees and poles along the curb side of the sidewalk.
    for kind, lo, hi in (("tree", 7.0, 20.0), ("pole", 12.0, 35.0)):
        x = -extent + rng.uniform(0.0, lo)
        while x < extent:
            y = yc + sign * (edge - (rng.uniform(1.0, 1.6) if kind == "tree" else rng.uniform(0.3, 0.7)))
            if kind == "tree" and rng.random() < 0.7:
                trunk_r, trunk_h = rng.uniform(0.12, 0.25), rng.uniform(1.8, 3.5)
                lay.primitives.append(
                    Cylinder((x, y), side_top, side_top + trunk_h, trunk_r, _surface(rng, "vegetation", 0.4))
                )
                rxy, rz = rng.uniform(1.2, 2.6), rng.uniform(1.2, 2.4)
                crown = Ellipsoid(
                    (x, y, side_top + trunk_h + 0.6 * rz),
                    (rxy, rxy * rng.uniform(0.8, 1.2), rz),
                    _surface(rng, "vegetation", 0.45, noise=0.08),
                )
                lay.primitives.append(crown)
                lay.occupied.append((x, y, trunk_r + 0.3))
            elif kind == "pole":
                r, h = rng.uniform(0.06, 0.13), rng.uniform(4.0, 9.0)
                lay.primitives.append(Cylinder((x, y), side_top, side_top + h, r, _surface(rng, "pole", 0.55)))
                if rng.random() < 0.5:  # a sign on top
                    lay.primitives.append(
                        Box((x, y, side_top + h - 0.4), (0.06, 0.7, 0.7), 0.0, _surface(rng, "pole", 0.8))
                    )
                lay.occupied.append((x, y, r + 0.3))
            x += rng.uniform(lo, hi)


def _backdrop(rng: np.random.Generator, lay: Layout, yc: float, edge: float, extent: float) -> None:
    """Distant structure: a second row of tall buildings and tree groups, and facades closing the street ends."""
    g = lay.ground_z
    for sign in (1.0, -1.0):
        x = -extent + rng.uniform(0.0, 10.0)
        while x < extent:
            length = rng.uniform(10.0, 35.0)
            near = edge + rng.uniform(16.0, 40.0)
            if rng.random() < 0.6:
                depth, height = rng.uniform(8.0, 20.0), rng.uniform(8.0, 30.0)
                centre = (x + length / 2, yc + sign * (near + depth / 2), g + height / 2)
                box = Box(centre, (length, depth, height), 0.0, _surface(rng, "building", 0.4))
                lay.primitives.append(box)
            else:
                for tx in np.arange(x + 3.0, x + length - 2.0, rng.uniform(4.0, 8.0)):
                    ty = yc + sign * (near + rng.uniform(0.0, 8.0))
                    th, rxy, rz = rng.uniform(2.0, 4.0), rng.uniform(2.0, 4.0), rng.uniform(2.0, 4.0)
                    lay.primitives.append(Cylinder((tx, ty), g, g + th, 0.3, _surface(rng, "vegetation", 0.4)))
                    crown = Ellipsoid(
                        (tx, ty, g + th + 0.6 * rz), (rxy, rxy, rz), _surface(rng, "vegetation", 0.45, noise=0.08)
                    )
                    lay.primitives.append(crown)
            x += length + rng.uniform(2.0, 15.0)
    for end in (1.0, -1.0):
        if rng.random() > 0.75:
            continue
        x_face = end * rng.uniform(30.0, 80.0)
        y = yc - 60.0
        while y < yc + 60.0:
            width = rng.uniform(10.0, 30.0)
            depth, height = rng.uniform(8.0, 15.0), rng.uniform(6.0, 25.0)
            box = Box((x_face + end * depth / 2, y + width / 2, g + height / 2), (depth, width, height), 0.0,
                      _surface(rng, "building", 0.4))  # fmt: skip
            lay.primitives.append(box)
            y += width + (rng.uniform(0.5, 3.0) if rng.random() < 0.7 else rng.uniform(8.0, 16.0))


def _place_cars(
    rng: np.random.Generator, lay: Layout, yc: float, half_width: float, num_moving: int, parked_prob: float
) -> None:
    g = lay.ground_z
    for sign in (1.0, -1.0):  # parked rows along both curbs
        x = -60.0 + rng.uniform(0.0, 5.0)
        while x < 60.0:
            size = car_size(rng)
            if rng.random() < parked_prob:
                cx = x + size[0] / 2
                cy = yc + sign * (half_width - size[1] / 2 - rng.uniform(0.15, 0.5))
                yaw = float(rng.choice([0.0, math.pi]) + rng.normal(0.0, 0.04))
                if lay.free(cx, cy, 0.5 * math.hypot(size[0], size[1])):
                    parts, box = make_car(
                        cx, cy, g, yaw, size, _surface(rng, "car", rng.uniform(0.3, 0.9), len(lay.boxes))
                    )
                    lay.add_object(parts, box, _CAR)
                x += size[0] + rng.uniform(0.8, 5.0)
            else:
                x += rng.uniform(3.0, 15.0)
    placed, tries = 0, 0
    while placed < num_moving and tries < 50 * max(num_moving, 1):
        tries += 1
        size = car_size(rng)
        cx = rng.uniform(-45.0, 45.0)
        cy = yc + rng.uniform(-half_width + 1.5, half_width - 1.5)
        yaw = (
            float(rng.uniform(-math.pi, math.pi))
            if rng.random() < 0.5
            else float(rng.choice([0.0, math.pi]) + rng.normal(0.0, 0.05))
        )
        rad = 0.5 * math.hypot(size[0], size[1])
        if abs(cy - yc) + rad > half_width + 0.5 or not lay.free(cx, cy, rad):
            continue
        parts, box = make_car(cx, cy, g, yaw, size, _surface(rng, "car", rng.uniform(0.3, 0.9), len(lay.boxes)))
        lay.add_object(parts, box, _CAR)
        placed += 1


def _place_people(
    rng: np.random.Generator, lay: Layout, yc: float, half_width: float, sidewalk: float, num_ped: int, num_cyc: int
) -> None:
    g = lay.ground_z
    for kind, count in (("pedestrian", num_ped), ("cyclist", num_cyc)):
        placed, tries = 0, 0
        while placed < count and tries < 50 * max(count, 1):
            tries += 1
            cx = rng.uniform(-35.0, 35.0)
            sign = float(rng.choice([-1.0, 1.0]))
            if kind == "pedestrian":
                size = person_size(rng)
                on_road = rng.random() < 0.25
                off = rng.uniform(0.5, half_width - 0.5) if on_road else half_width + rng.uniform(0.5, sidewalk - 0.4)
                base = g if on_road else g + CURB
                yaw = float(rng.uniform(-math.pi, math.pi))
            else:
                size = cyclist_size(rng)
                off = half_width - rng.uniform(0.8, 1.8)
                base = g
                yaw = (
                    float(rng.uniform(-math.pi, math.pi))
                    if rng.random() < 0.3
                    else float(rng.choice([0.0, math.pi]) + rng.normal(0, 0.1))
                )
            cy = yc + sign * off
            rad = 0.5 * math.hypot(size[0], size[1])
            if not lay.free(cx, cy, rad + 0.2):
                continue
            n = len(lay.boxes)
            if kind == "pedestrian":
                parts, box = make_pedestrian(cx, cy, base, yaw, size, _surface(rng, "person", 0.35, n))
                lay.add_object(parts, box, _PED)
            else:
                parts, box = make_cyclist(cx, cy, base, yaw, size, _surface(rng, "cyclist", 0.4, n))
                lay.add_object(parts, box, _CYC)
            placed += 1


def build_street(
    rng: np.random.Generator,
    *,
    sensor_height: float = 1.73,
    extent: float = 90.0,
    num_moving_cars: int | None = None,
    parked_prob: float = 0.55,
    num_pedestrians: int | None = None,
    num_cyclists: int | None = None,
    ego_vehicle: bool = True,
) -> Layout:
    """Lay out one street around a sensor at the origin (street frame: road along +x).

    Args:
        rng: source of all randomness.
        sensor_height: sensor height above the road (m).
        extent: the street spans x in [-extent, extent].
        num_moving_cars, num_pedestrians, num_cyclists: counts (random when None).
        parked_prob: chance that a parking slot along a curb holds a car.
        ego_vehicle: add the body of the car carrying the sensor (blocks rays, returns nothing).
    """
    half_width = rng.uniform(4.0, 7.5)
    yc = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.0, half_width - 2.0)
    sidewalk = rng.uniform(2.0, 4.5)
    lay = Layout(ground_z=-sensor_height, ground=_street_ground(yc, half_width))
    lay.occupied.append((0.0, 0.0, 2.8))  # the vehicle carrying the sensor
    g = -sensor_height
    if ego_vehicle:  # its body hides the steepest beams ahead and behind; it returns no points
        lay.primitives.append(Box((-0.45, 0.0, g + 0.5), (4.5, 1.8, 1.0), 0.0, Surface(IGNORE_INDEX)))
    for sign in (1.0, -1.0):
        cy = yc + sign * (half_width + sidewalk / 2)
        surface = _surface(rng, "sidewalk", 0.3)
        for x0 in np.arange(-extent, extent, 15.0):  # short slabs: tighter ray culling
            x1 = min(x0 + 15.0, extent)
            lay.primitives.append(Box((0.5 * (x0 + x1), cy, g + CURB / 2), (x1 - x0, sidewalk, CURB), 0.0, surface))
    for sign in (1.0, -1.0):
        _side_structures(rng, lay, yc, sign, half_width + sidewalk, extent)
    _backdrop(rng, lay, yc, half_width + sidewalk, extent)
    moving = int(rng.integers(2, 7)) if num_moving_cars is None else int(num_moving_cars)
    _place_cars(rng, lay, yc, half_width, moving, parked_prob)
    n_ped = int(rng.integers(3, 10)) if num_pedestrians is None else int(num_pedestrians)
    n_cyc = int(rng.integers(1, 4)) if num_cyclists is None else int(num_cyclists)
    _place_people(rng, lay, yc, half_width, sidewalk, n_ped, n_cyc)
    return lay
