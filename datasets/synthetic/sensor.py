"""Simulated sensors: ray patterns (spinning 64-beam LiDAR, RGB-D panorama) and return formation."""

from __future__ import annotations

import math

import numpy as np

from .classes import IGNORE_INDEX
from .raycast import Hits

HDL64_ELEVATIONS_DEG: np.ndarray = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.8, 32)])
"""Elevation of the 64 beams of a Velodyne HDL-64E-like sensor, top to bottom (degrees)."""


def beam_elevations(num_beams: int) -> np.ndarray:
    """[num_beams] beam elevations in degrees (HDL-64E layout for 64, else evenly +2 .. -24.8)."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if num_beams == 64:
        return HDL64_ELEVATIONS_DEG.copy()
    return np.linspace(2.0, -24.8, num_beams)


def spinning_lidar_rays(
    num_beams: int = 64, num_azimuth: int = 2048, phase: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Ray directions of one revolution of a spinning multi-beam LiDAR.

    Each beam fires ``num_azimuth`` times per revolution; beams carry a small
    fixed azimuth offset (as the lasers of a real head do).

    Returns:
        dirs: [num_beams * num_azimuth, 3] float64 unit directions.
        ring: [num_beams * num_azimuth] int64 beam index (0 = top beam).
    """
    if num_azimuth < 8:
        raise ValueError(f"num_azimuth must be >= 8, got {num_azimuth}")
    el = np.radians(beam_elevations(num_beams))[:, None]
    step = 2 * math.pi / num_azimuth
    beam_offset = (np.arange(num_beams) % 4)[:, None] * (step / 4)
    az = phase + np.arange(num_azimuth)[None, :] * step + beam_offset
    az = np.mod(az + math.pi, 2 * math.pi) - math.pi
    ce = np.cos(el)
    dirs = np.stack(np.broadcast_arrays(ce * np.cos(az), ce * np.sin(az), np.sin(el)), axis=-1).reshape(-1, 3)
    ring = np.repeat(np.arange(num_beams, dtype=np.int64), num_azimuth)
    return dirs, ring


def rgbd_panorama_rays(
    width: int = 160, height: int = 160, num_cameras: int = 4, vfov_deg: float = 90.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rays of ``num_cameras`` pinhole depth cameras spread evenly around +z.

    Pixels are uniform on each image plane (the density pattern of RGB-D
    scans, not of a spinning LiDAR); horizontal FOVs tile the full circle.

    Returns:
        dirs: [num_cameras * height * width, 3] float64 unit directions.
        row: [num_cameras * height * width] int64 image row of each pixel.
    """
    if min(width, height, num_cameras) < 1:
        raise ValueError(f"width, height and num_cameras must be >= 1, got {width}, {height}, {num_cameras}")
    tan_h = math.tan(math.pi / num_cameras)
    tan_v = math.tan(math.radians(vfov_deg) / 2)
    u = ((np.arange(width) + 0.5) / width * 2 - 1) * tan_h
    v = ((np.arange(height) + 0.5) / height * 2 - 1) * tan_v
    uu, vv = np.meshgrid(u, v[::-1])
    cam = np.stack([np.ones_like(uu), -uu, vv], axis=-1).reshape(-1, 3)
    cam /= np.linalg.norm(cam, axis=1, keepdims=True)
    out = []
    for k in range(num_cameras):
        a = 2 * math.pi * k / num_cameras
        c, s = math.cos(a), math.sin(a)
        out.append(np.stack([c * cam[:, 0] - s * cam[:, 1], s * cam[:, 0] + c * cam[:, 1], cam[:, 2]], axis=1))
    row = np.tile(np.repeat(np.arange(height, dtype=np.int64), width), num_cameras)
    return np.concatenate(out), row


def form_returns(
    hits: Hits,
    dirs: np.ndarray,
    rng: np.random.Generator,
    *,
    min_range: float,
    max_range: float,
    range_noise: float,
    dropout: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn first hits into measured returns: range noise, intensity, dropouts.

    Rays stopped by a surface labelled 255 (the sensor's own vehicle) give no return.
    Intensity is ``reflectivity * (0.35 + 0.65 cos)`` with a mild range
    falloff and noise, clipped to [0, 1]. Rays are lost where they hit
    nothing, fall outside [min_range, max_range], at random (``dropout``) and,
    more often, far away on dark surfaces.

    Returns:
        keep: [R] bool, rays that produced a return.
        points: [K, 4] float32 (x, y, z, intensity) of the kept rays.
    """
    t = hits.t
    finite = np.isfinite(t)
    tn = np.where(finite, t, 0.0)
    r = tn + rng.normal(size=t.shape) * (range_noise + hits.noise)
    inten = hits.reflectivity * (0.35 + 0.65 * hits.cos) * np.exp(-tn / 250.0)
    inten = np.clip(inten + rng.normal(scale=0.02, size=t.shape), 0.0, 1.0)
    # Weak returns (dark and far) are lost more often.
    p_lost = dropout + 0.5 * np.clip(tn / max_range, 0, 1) ** 2 * (1 - hits.reflectivity)
    # Surfaces labelled 255 (the ego vehicle) block rays but return nothing, as in KITTI.
    keep = (
        finite & (hits.label != IGNORE_INDEX) & (tn >= min_range) & (tn <= max_range) & (rng.random(t.shape) >= p_lost)
    )
    xyz = dirs[keep] * r[keep, None]
    points = np.concatenate([xyz, inten[keep, None]], axis=1).astype(np.float32)
    return keep, points
