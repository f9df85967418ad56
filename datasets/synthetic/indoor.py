"""Procedural room: floor, walls, ceiling, furniture and a few people around a sensor at the origin."""

from __future__ import annotations

import math

import numpy as np

from .classes import DETECTION_CLASSES, INDOOR_CLASSES, class_id
from .objects import Frame, make_pedestrian, person_size
from .outdoor import Layout
from .primitives import Box, Ellipsoid, Primitive, Surface

_C = {name: class_id(INDOOR_CLASSES, name) for name in INDOOR_CLASSES}
_PED = class_id(DETECTION_CLASSES, "pedestrian")
_ALBEDO = {"floor": 0.45, "wall": 0.75, "ceiling": 0.85, "table": 0.5, "chair": 0.4, "sofa": 0.35, "bed": 0.7}
_ALBEDO |= {"cabinet": 0.55, "lamp": 0.8, "person": 0.4}


def _surface(rng: np.random.Generator, name: str, instance: int = -1) -> Surface:
    return Surface(_C[name], instance, float(np.clip(_ALBEDO[name] * rng.uniform(0.7, 1.2), 0.05, 1.0)), 0.002)


def _legs(f: Frame, l: float, w: float, h: float, r: float, s: Surface) -> list[Primitive]:
    return [f.cylinder(sx * (l / 2 - r), sy * (w / 2 - r), 0.0, h, r, s) for sx in (-1, 1) for sy in (-1, 1)]


def _table(f: Frame, rng: np.random.Generator) -> tuple[list[Primitive], float]:
    l, w, h = rng.uniform(1.0, 1.8), rng.uniform(0.7, 1.0), rng.uniform(0.7, 0.76)
    s = _surface(rng, "table")
    return [f.box(-l / 2, l / 2, -w / 2, w / 2, h - 0.04, h, s), *_legs(f, l, w, h - 0.04, 0.03, s)], 0.5 * math.hypot(
        l, w
    )


def _chair(f: Frame, rng: np.random.Generator) -> tuple[list[Primitive], float]:
    d, seat = rng.uniform(0.4, 0.5), rng.uniform(0.43, 0.48)
    s = _surface(rng, "chair")
    parts = [f.box(-d / 2, d / 2, -d / 2, d / 2, seat - 0.04, seat, s), *_legs(f, d, d, seat - 0.04, 0.02, s)]
    parts.append(f.box(-d / 2, -d / 2 + 0.04, -d / 2, d / 2, seat, seat + rng.uniform(0.35, 0.5), s))
    return parts, 0.75 * d


def _sofa(f: Frame, rng: np.random.Generator) -> tuple[list[Primitive], float]:
    l, w = rng.uniform(1.6, 2.4), rng.uniform(0.8, 1.0)
    s = _surface(rng, "sofa")
    parts = [
        f.box(-w / 2, w / 2, -l / 2, l / 2, 0.0, 0.45, s),
        f.box(-w / 2, -w / 2 + 0.22, -l / 2, l / 2, 0.45, 0.85, s),
        f.box(-w / 2, w / 2, -l / 2, -l / 2 + 0.2, 0.45, 0.62, s),
        f.box(-w / 2, w / 2, l / 2 - 0.2, l / 2, 0.45, 0.62, s),
    ]
    return parts, 0.5 * math.hypot(l, w)


def _bed(f: Frame, rng: np.random.Generator) -> tuple[list[Primitive], float]:
    l, w = rng.uniform(1.9, 2.1), rng.uniform(0.9, 1.8)
    s = _surface(rng, "bed")
    parts = [f.box(-l / 2, l / 2, -w / 2, w / 2, 0.0, 0.5, s), f.box(-l / 2, -l / 2 + 0.08, -w / 2, w / 2, 0.5, 1.0, s)]
    return parts, 0.5 * math.hypot(l, w)


def _cabinet(f: Frame, rng: np.random.Generator) -> tuple[list[Primitive], float]:
    d, w, h = rng.uniform(0.4, 0.6), rng.uniform(0.5, 1.6), rng.uniform(0.8, 2.1)
    return [f.box(-d / 2, d / 2, -w / 2, w / 2, 0.0, h, _surface(rng, "cabinet"))], 0.5 * math.hypot(d, w)


def _lamp(f: Frame, rng: np.random.Generator) -> tuple[list[Primitive], float]:
    h = rng.uniform(1.3, 1.7)
    s = _surface(rng, "lamp")
    px, py = f.xy(0.0, 0.0)
    shade = Ellipsoid((px, py, f.gz + h), (0.2, 0.2, 0.15), s)
    return [f.cylinder(0.0, 0.0, 0.0, h - 0.1, 0.02, s), f.box(-0.15, 0.15, -0.15, 0.15, 0.0, 0.03, s), shade], 0.25


_AGAINST_WALL = {"sofa": _sofa, "bed": _bed, "cabinet": _cabinet}
_FREE = {"table": _table, "chair": _chair, "lamp": _lamp}


def build_room(
    rng: np.random.Generator, *, sensor_height: float | None = None, num_people: int | None = None
) -> Layout:
    """Lay out one furnished room around a sensor at the origin.

    Args:
        rng: source of all randomness.
        sensor_height: sensor height above the floor (random 1.2-1.6 m when None).
        num_people: standing people (pedestrian boxes), random 0-2 when None.
    """
    lx, ly, height = rng.uniform(4.5, 9.0), rng.uniform(3.5, 7.0), rng.uniform(2.5, 3.2)
    sh = rng.uniform(1.2, 1.6) if sensor_height is None else float(sensor_height)
    x0, y0 = -rng.uniform(0.3, 0.7) * lx, -rng.uniform(0.3, 0.7) * ly
    x1, y1, g = x0 + lx, y0 + ly, -sh

    def floor(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tile = 0.45 + 0.05 * ((np.floor(x / 0.6) + np.floor(y / 0.6)) % 2)
        return np.full(x.shape, _C["floor"], dtype=np.int64), tile

    lay = Layout(ground_z=g, ground=floor)
    t = 0.1
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    lay.primitives += [
        Box((cx, cy, g + height + t / 2), (lx + 2 * t, ly + 2 * t, t), 0.0, _surface(rng, "ceiling")),
        Box((x0 - t / 2, cy, g + height / 2), (t, ly + 2 * t, height), 0.0, _surface(rng, "wall")),
        Box((x1 + t / 2, cy, g + height / 2), (t, ly + 2 * t, height), 0.0, _surface(rng, "wall")),
        Box((cx, y0 - t / 2, g + height / 2), (lx, t, height), 0.0, _surface(rng, "wall")),
        Box((cx, y1 + t / 2, g + height / 2), (lx, t, height), 0.0, _surface(rng, "wall")),
    ]
    lay.occupied.append((0.0, 0.0, 0.6))  # keep the sensor's tripod clear
    items = [k for k, p in (("bed", 0.5), ("sofa", 0.6)) if rng.random() < p]
    items += ["cabinet"] * int(rng.integers(1, 4)) + ["table"] * int(rng.integers(1, 3))
    items += ["chair"] * int(rng.integers(2, 6)) + ["lamp"] * int(rng.integers(0, 3))
    for name in items:
        for _ in range(40):
            if name in _AGAINST_WALL:
                wall = int(rng.integers(4))
                yaw = (0.0, math.pi, 0.5 * math.pi, -0.5 * math.pi)[wall]  # back (local -x) to the wall
                depth = {"bed": 1.1, "sofa": 0.52, "cabinet": 0.32}[name]
                along = rng.uniform(x0 + 1.0, x1 - 1.0) if wall >= 2 else rng.uniform(y0 + 1.0, y1 - 1.0)
                px = (x0 + depth, x1 - depth, along, along)[wall]
                py = (along, along, y0 + depth, y1 - depth)[wall]
                builder = _AGAINST_WALL[name]
            else:
                px, py = rng.uniform(x0 + 0.5, x1 - 0.5), rng.uniform(y0 + 0.5, y1 - 0.5)
                yaw = float(rng.uniform(-math.pi, math.pi))
                builder = _FREE[name]
            parts, radius = builder(Frame(px, py, g, yaw), rng)
            if lay.free(px, py, radius):
                lay.primitives += parts
                lay.occupied.append((px, py, radius))
                break
    people = int(rng.integers(0, 3)) if num_people is None else int(num_people)
    for _ in range(people):
        for _ in range(40):
            size = person_size(rng)
            px, py = rng.uniform(x0 + 0.5, x1 - 0.5), rng.uniform(y0 + 0.5, y1 - 0.5)
            if lay.free(px, py, 0.5):
                s = _surface(rng, "person", len(lay.boxes))
                parts, box = make_pedestrian(px, py, g, float(rng.uniform(-math.pi, math.pi)), size, s)
                lay.add_object(parts, box, _PED)
                break
    return lay
