"""Detection objects built from solids: cars, pedestrians, cyclists.

Each builder returns the solids of one object and its box
``[cx, cy, cz, l, w, h, yaw]`` (geometric centre, yaw about +z); every solid
lies inside the box. Cars are solid in the lower half of the box (between
0.3 m above the box bottom and half its height), which the occlusion tests
rely on.
"""

from __future__ import annotations

import math

import numpy as np

from .primitives import Box, Cylinder, Ellipsoid, Primitive, Surface

ObjectParts = tuple[list[Primitive], np.ndarray]


class Frame:
    """Maps object-local (x forward, y left, z up from the ground) to the sensor frame."""

    def __init__(self, cx: float, cy: float, ground_z: float, yaw: float) -> None:
        self.cx, self.cy, self.gz, self.yaw = cx, cy, ground_z, yaw
        self.c, self.s = math.cos(yaw), math.sin(yaw)

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + self.c * x - self.s * y, self.cy + self.s * x + self.c * y

    def box(self, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, surface: Surface) -> Box:
        px, py = self.xy(0.5 * (x0 + x1), 0.5 * (y0 + y1))
        return Box((px, py, self.gz + 0.5 * (z0 + z1)), (x1 - x0, y1 - y0, z1 - z0), self.yaw, surface)

    def cylinder(self, x: float, y: float, z0: float, z1: float, radius: float, surface: Surface) -> Cylinder:
        return Cylinder(self.xy(x, y), self.gz + z0, self.gz + z1, radius, surface)

    def sphere(self, x: float, y: float, z: float, radius: float, surface: Surface) -> Ellipsoid:
        px, py = self.xy(x, y)
        return Ellipsoid((px, py, self.gz + z), (radius, radius, radius), surface)

    def bbox(self, l: float, w: float, h: float) -> np.ndarray:
        return np.array([self.cx, self.cy, self.gz + 0.5 * h, l, w, h, self.yaw], dtype=np.float32)


def car_size(rng: np.random.Generator) -> tuple[float, float, float]:
    """(l, w, h) of a passenger car, around 4.2 x 1.8 x 1.6 m."""
    l = float(np.clip(rng.normal(4.2, 0.3), 3.5, 5.2))
    w = float(np.clip(rng.normal(1.8, 0.08), 1.6, 2.0))
    h = float(np.clip(rng.normal(1.6, 0.12), 1.4, 2.0))
    return l, w, h


def make_car(
    cx: float, cy: float, ground_z: float, yaw: float, size: tuple[float, float, float], surface: Surface
) -> ObjectParts:
    """Chassis, cabin and four wheels of a car of ``size`` (l, w, h)."""
    l, w, h = size
    f = Frame(cx, cy, ground_z, yaw)
    belt = 0.6 * h
    parts: list[Primitive] = [
        f.box(-l / 2, l / 2, -w / 2, w / 2, 0.22, belt, surface),
        f.box(-0.32 * l, 0.22 * l, -0.45 * w, 0.45 * w, belt, h, surface),
    ]
    for sx in (-0.3 * l, 0.3 * l):
        for sy in (-w / 2 + 0.12, w / 2 - 0.12):
            parts.append(f.box(sx - 0.32, sx + 0.32, sy - 0.11, sy + 0.11, 0.0, 0.62, surface))
    return parts, f.bbox(l, w, h)


def person_size(rng: np.random.Generator) -> tuple[float, float, float]:
    """(l, w, h) of a standing person, around 0.6 x 0.6 x 1.7 m."""
    return (
        float(rng.uniform(0.5, 0.75)),
        float(rng.uniform(0.55, 0.7)),
        float(np.clip(rng.normal(1.72, 0.08), 1.5, 1.95)),
    )


def make_pedestrian(
    cx: float, cy: float, ground_z: float, yaw: float, size: tuple[float, float, float], surface: Surface
) -> ObjectParts:
    """Legs, torso, arms and head of a walking person."""
    l, w, h = size
    f = Frame(cx, cy, ground_z, yaw)
    hip, shoulder, head_r = 0.48 * h, 0.82 * h, 0.11
    stride = min(0.15, l / 2 - 0.08)
    parts: list[Primitive] = [
        f.cylinder(stride, 0.09, 0.0, hip, 0.075, surface),
        f.cylinder(-stride, -0.09, 0.0, hip, 0.075, surface),
        f.cylinder(0.0, 0.0, hip, shoulder, 0.17, surface),
        f.cylinder(0.0, w / 2 - 0.06, 0.45 * h, shoulder, 0.05, surface),
        f.cylinder(0.0, -w / 2 + 0.06, 0.45 * h, shoulder, 0.05, surface),
        f.sphere(0.0, 0.0, h - head_r, head_r, surface),
    ]
    return parts, f.bbox(l, w, h)


def cyclist_size(rng: np.random.Generator) -> tuple[float, float, float]:
    """(l, w, h) of a person on a bicycle, around 1.8 x 0.6 x 1.7 m."""
    return (
        float(rng.uniform(1.65, 1.9)),
        float(rng.uniform(0.55, 0.7)),
        float(np.clip(rng.normal(1.72, 0.07), 1.55, 1.9)),
    )


def make_cyclist(
    cx: float, cy: float, ground_z: float, yaw: float, size: tuple[float, float, float], surface: Surface
) -> ObjectParts:
    """Two wheels, a frame and a riding person."""
    l, w, h = size
    f = Frame(cx, cy, ground_z, yaw)
    wheel = 0.34
    wx = l / 2 - wheel
    head_r = 0.11
    parts: list[Primitive] = [
        f.box(wx - wheel, wx + wheel, -0.03, 0.03, 0.0, 2 * wheel, surface),
        f.box(-wx - wheel, -wx + wheel, -0.03, 0.03, 0.0, 2 * wheel, surface),
        f.box(-wx, wx, -0.05, 0.05, wheel, 0.95, surface),
        f.cylinder(-0.1, 0.12, 0.5, 1.0, 0.07, surface),
        f.cylinder(-0.1, -0.12, 0.5, 1.0, 0.07, surface),
        f.cylinder(-0.05, 0.0, 0.95, 0.84 * h, 0.16, surface),
        f.cylinder(0.25, w / 2 - 0.06, 1.0, 0.8 * h, 0.045, surface),
        f.cylinder(0.25, -w / 2 + 0.06, 1.0, 0.8 * h, 0.045, surface),
        f.sphere(0.05, 0.0, h - head_r, head_r, surface),
    ]
    return parts, f.bbox(l, w, h)
