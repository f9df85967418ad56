"""Point-cloud augmentation that moves detection boxes along with the points.

Every transform is called as ``t(points, boxes=None, rng=rng) -> (points, boxes)``:

* ``points``: [N, >=3] float array; columns 0..2 are x, y, z, the rest (intensity, ...) pass through;
* ``boxes``: [B, 7] (cx, cy, cz, l, w, h, yaw about +z) or None;
* ``rng``: a ``numpy.random.Generator`` (the only source of randomness).

Inputs are never modified; yaw is wrapped to [-pi, pi).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Boxes = np.ndarray | None


def _check(points: np.ndarray, boxes: Boxes, rng: np.random.Generator) -> tuple[np.ndarray, Boxes]:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; use np.random.default_rng(seed)"
        )
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3 or pts.dtype.kind != "f":
        raise ValueError(f"points must be a float array of shape [N, >=3], got {pts.dtype} {list(pts.shape)}")
    if boxes is None:
        return pts.copy(), None
    bx = np.asarray(boxes)
    if bx.ndim != 2 or bx.shape[1] != 7:
        raise ValueError(f"boxes must have shape [B, 7] (cx, cy, cz, l, w, h, yaw), got {list(bx.shape)}")
    return pts.copy(), bx.astype(np.float32 if bx.dtype.kind != "f" else bx.dtype, copy=True)


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return np.mod(a + math.pi, 2 * math.pi) - math.pi


def rotate_z(points: np.ndarray, boxes: Boxes, angle: float) -> tuple[np.ndarray, Boxes]:
    """Rotate points [N, >=3] and boxes [B, 7] by ``angle`` (radians) about +z (returns copies)."""
    pts = np.array(points, copy=True)
    c, s = math.cos(angle), math.sin(angle)
    x, y = pts[:, 0].copy(), pts[:, 1].copy()
    pts[:, 0] = c * x - s * y
    pts[:, 1] = s * x + c * y
    if boxes is None:
        return pts, None
    bx = np.array(boxes, copy=True)
    x, y = bx[:, 0].copy(), bx[:, 1].copy()
    bx[:, 0] = c * x - s * y
    bx[:, 1] = s * x + c * y
    bx[:, 6] = wrap_angle(bx[:, 6] + angle)
    return pts, bx


@dataclass(frozen=True)
class RandomRotateZ:
    """Rotation about +z by an angle uniform in [-max_angle, max_angle]."""

    max_angle: float = math.pi

    def __call__(
        self, points: np.ndarray, boxes: Boxes = None, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, Boxes]:
        pts, bx = _check(points, boxes, rng)
        return rotate_z(pts, bx, float(rng.uniform(-self.max_angle, self.max_angle)))


@dataclass(frozen=True)
class RandomFlip:
    """Mirror x (x -> -x, yaw -> pi - yaw) with probability ``p_x``; y (y -> -y, yaw -> -yaw) with ``p_y``."""

    p_x: float = 0.5
    p_y: float = 0.5

    def __call__(
        self, points: np.ndarray, boxes: Boxes = None, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, Boxes]:
        pts, bx = _check(points, boxes, rng)
        flip_x, flip_y = rng.random() < self.p_x, rng.random() < self.p_y
        if flip_x:
            pts[:, 0] = -pts[:, 0]
            if bx is not None:
                bx[:, 0] = -bx[:, 0]
                bx[:, 6] = wrap_angle(math.pi - bx[:, 6])
        if flip_y:
            pts[:, 1] = -pts[:, 1]
            if bx is not None:
                bx[:, 1] = -bx[:, 1]
                bx[:, 6] = wrap_angle(-bx[:, 6])
        return pts, bx


@dataclass(frozen=True)
class RandomScale:
    """Uniform scaling of coordinates and box centres/sizes by a factor in [low, high]."""

    low: float = 0.95
    high: float = 1.05

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"RandomScale needs 0 < low <= high, got low={self.low}, high={self.high}")

    def __call__(
        self, points: np.ndarray, boxes: Boxes = None, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, Boxes]:
        pts, bx = _check(points, boxes, rng)
        s = float(rng.uniform(self.low, self.high))
        pts[:, :3] *= s
        if bx is not None:
            bx[:, :6] *= s
        return pts, bx


@dataclass(frozen=True)
class RandomJitter:
    """Independent Gaussian noise (``sigma``, clipped to +-``clip``) on every point's x, y, z; boxes unchanged."""

    sigma: float = 0.01
    clip: float = 0.05

    def __call__(
        self, points: np.ndarray, boxes: Boxes = None, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, Boxes]:
        pts, bx = _check(points, boxes, rng)
        noise = np.clip(rng.normal(0.0, self.sigma, size=(pts.shape[0], 3)), -self.clip, self.clip)
        pts[:, :3] += noise.astype(pts.dtype)
        return pts, bx


class Compose:
    """Apply transforms in order, threading points and boxes through."""

    def __init__(self, transforms: Sequence) -> None:
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}] is {type(t).__name__}, which is not callable")
        self.transforms = list(transforms)

    def __call__(
        self, points: np.ndarray, boxes: Boxes = None, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, Boxes]:
        pts, bx = _check(points, boxes, rng)
        for t in self.transforms:
            pts, bx = t(pts, bx, rng=rng)
        return pts, bx

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def default_augmentation(jitter: bool = True) -> Compose:
    """Rotation about z (full circle), x/y flips, scale 0.95-1.05 and (optionally) 1 cm jitter."""
    steps: list = [RandomRotateZ(), RandomFlip(), RandomScale()]
    if jitter:
        steps.append(RandomJitter())
    return Compose(steps)
