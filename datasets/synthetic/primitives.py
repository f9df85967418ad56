"""Analytic solids hit by rays from the origin: yawed boxes, vertical cylinders, ellipsoids.

Every ray starts at the sensor (the origin); ``intersect(dirs)`` takes unit
directions [R, 3] float64 and returns ``(t, cos)``: the distance to the first
hit in front of the sensor (``inf`` on a miss) and the absolute cosine between
the ray and the surface normal there (used for the return intensity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-6


@dataclass(frozen=True)
class Surface:
    """What a hit on a solid records: semantic class, object instance, reflectivity, range noise."""

    label: int
    instance: int = -1
    reflectivity: float = 0.4
    noise: float = 0.0


@dataclass(frozen=True)
class Box:
    """Box of size (l, w, h) centred at ``center``, rotated by ``yaw`` about +z."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    surface: Surface

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center, dtype=np.float64), 0.5 * math.sqrt(sum(s * s for s in self.size))

    def intersect(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        cx, cy, cz = self.center
        # Slab test in the box frame (origin at the box centre); the ray starts at -R^T centre.
        origin = (-(c * cx + s * cy), -(-s * cx + c * cy), -cz)
        local = (c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2])
        tnear = np.full(dirs.shape[0], -np.inf)
        tfar = np.full(dirs.shape[0], np.inf)
        cos = np.zeros(dirs.shape[0])
        for o, d, size in zip(origin, local, self.size):
            h = 0.5 * size
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / d
                ta = (-h - o) * inv
                tb = (h - o) * inv
            lo = np.minimum(ta, tb)
            np.minimum(tfar, np.maximum(ta, tb), out=tfar)
            entering = lo > tnear
            tnear = np.where(entering, lo, tnear)
            cos = np.where(entering, np.abs(d), cos)
        # A ray starting inside the box (tnear <= 0) reports its exit point.
        t = np.where(tnear > _EPS, tnear, tfar)
        hit = (tnear <= tfar) & (tfar > _EPS)
        return np.where(hit, t, np.inf), cos


@dataclass(frozen=True)
class Cylinder:
    """Vertical cylinder of ``radius`` around (x, y) = ``center``, from ``z0`` to ``z1``, with caps."""

    center: tuple[float, float]
    z0: float
    z1: float
    radius: float
    surface: Surface

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        half = 0.5 * (self.z1 - self.z0)
        centre = np.array([self.center[0], self.center[1], 0.5 * (self.z0 + self.z1)])
        return centre, math.sqrt(half * half + self.radius * self.radius)

    def intersect(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = self.center
        r = self.radius
        dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
        a = dx * dx + dy * dy
        b = dx * cx + dy * cy  # half of the linear coefficient, sign flipped
        cc = cx * cx + cy * cy - r * r
        disc = b * b - a * cc
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.sqrt(np.maximum(disc, 0.0))
            t_side = (b - root) / a
        z = dz * t_side
        side_ok = (disc >= 0) & (a > _EPS) & (t_side > _EPS) & (z >= self.z0) & (z <= self.z1)
        t = np.where(side_ok, t_side, np.inf)
        # Cosine on the side: radial normal against the ray.
        px, py = dx * t_side - cx, dy * t_side - cy
        cos = np.where(side_ok, np.abs(px * dx + py * dy) / r, 0.0)
        for zc in (self.z0, self.z1):
            with np.errstate(divide="ignore", invalid="ignore"):
                tc = zc / dz
            qx, qy = dx * tc - cx, dy * tc - cy
            cap = (tc > _EPS) & (qx * qx + qy * qy <= r * r) & (tc < t)
            t = np.where(cap, tc, t)
            cos = np.where(cap, np.abs(dz), cos)
        return t, np.nan_to_num(cos)


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid with semi-axes ``radii`` centred at ``center``."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    surface: Surface

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center, dtype=np.float64), float(max(self.radii))

    def intersect(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rad = np.asarray(self.radii, dtype=np.float64)
        o = -np.asarray(self.center, dtype=np.float64) / rad
        d = dirs / rad
        a = np.einsum("ij,ij->i", d, d)
        b = d @ o
        cc = float(o @ o) - 1.0
        disc = b * b - a * cc
        root = np.sqrt(np.maximum(disc, 0.0))
        t_near = (-b - root) / a
        t_far = (-b + root) / a
        t = np.where(t_near > _EPS, t_near, t_far)
        hit = (disc >= 0) & (t > _EPS)
        t = np.where(hit, t, np.inf)
        # Normal of the ellipsoid at the hit: gradient (p - c) / radii^2.
        p = dirs * np.where(hit, t, 0.0)[:, None]
        n = (p - np.asarray(self.center)) / (rad * rad)
        norm = np.linalg.norm(n, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.abs(np.einsum("ij,ij->i", n, dirs)) / norm
        return t, np.nan_to_num(cos)


Primitive = Box | Cylinder | Ellipsoid
