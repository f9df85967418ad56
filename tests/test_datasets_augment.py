"""Augmentation: boxes move with the points, seeded determinism, input safety, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torchsparse_lite.datasets.augment import (
    Compose,
    RandomFlip,
    RandomJitter,
    RandomRotateZ,
    RandomScale,
    default_augmentation,
    rotate_z,
)
from torchsparse_lite.datasets.synthetic import Scan, generate_scan

RIGID = {
    "rotate": RandomRotateZ(),
    "flip_x": RandomFlip(p_x=1.0, p_y=0.0),
    "flip_y": RandomFlip(p_x=0.0, p_y=1.0),
    "flip_xy": RandomFlip(p_x=1.0, p_y=1.0),
    "scale": RandomScale(0.8, 1.2),
    "compose": Compose([RandomRotateZ(), RandomFlip(), RandomScale()]),
}


@pytest.fixture(scope="module")
def scan() -> Scan:
    return generate_scan(4, num_azimuth=900)


def corners(boxes: np.ndarray) -> np.ndarray:
    """[B, 8, 3] corners of [B, 7] boxes."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    local = signs[None] * boxes[:, None, 3:6].astype(np.float64) / 2
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def inside(points: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    c, s = math.cos(box[6]), math.sin(box[6])
    d = points[:, :3].astype(np.float64) - box[:3]
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
    return (np.abs(local) <= box[3:6] / 2 + margin).all(axis=1)


@pytest.mark.parametrize("name", sorted(RIGID))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_move_with_points(scan: Scan, name: str, seed: int) -> None:
    t = RIGID[name]
    pts, boxes = t(scan.points, scan.boxes, rng=np.random.default_rng(seed))
    assert pts.shape == scan.points.shape and boxes.shape == scan.boxes.shape
    np.testing.assert_array_equal(pts[:, 3], scan.points[:, 3])  # intensity passes through
    # The box corners are where the transformed corners go (as an unordered set).
    moved, _ = t(corners(scan.boxes).reshape(-1, 3), None, rng=np.random.default_rng(seed))
    want = np.sort(moved.reshape(-1, 8, 3).round(3), axis=1)
    got = np.sort(corners(boxes).round(3), axis=1)
    np.testing.assert_allclose(got, want, atol=2e-3)
    # Object points stay in their boxes.
    for i, box in enumerate(boxes):
        mine = scan.instances == i
        assert inside(pts[mine], box, margin=0.08).all(), (name, i)
    assert (np.abs(boxes[:, 6]) <= math.pi + 1e-6).all()


def test_rotation_is_the_drawn_angle() -> None:
    pts = np.array([[1.0, 0.0, 0.5, 0.3]], dtype=np.float32)
    box = np.array([[1.0, 0.0, 0.5, 4.0, 2.0, 1.5, 0.0]], dtype=np.float32)
    out, bx = rotate_z(pts, box, math.pi / 2)
    np.testing.assert_allclose(out[0, :3], [0.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(bx[0], [0.0, 1.0, 0.5, 4.0, 2.0, 1.5, math.pi / 2], atol=1e-6)
    _, flipped = RandomFlip(p_x=1.0, p_y=0.0)(
        pts, np.array([[1, 2, 0, 4, 2, 1, 0.3]], np.float32), rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(flipped[0, [0, 1, 6]], [-1, 2, math.pi - 0.3], atol=1e-6)


def test_jitter_bounded_and_boxes_unchanged(scan: Scan) -> None:
    t = RandomJitter(sigma=0.02, clip=0.03)
    pts, boxes = t(scan.points, scan.boxes, rng=np.random.default_rng(0))
    delta = pts[:, :3] - scan.points[:, :3]
    assert np.abs(delta).max() <= 0.03 + 1e-6 and 0.015 < delta.std() < 0.025
    np.testing.assert_array_equal(boxes, scan.boxes)


def test_deterministic_and_inputs_untouched(scan: Scan) -> None:
    aug = default_augmentation()
    before_p, before_b = scan.points.copy(), scan.boxes.copy()
    a = aug(scan.points, scan.boxes, rng=np.random.default_rng(9))
    b = aug(scan.points, scan.boxes, rng=np.random.default_rng(9))
    c = aug(scan.points, scan.boxes, rng=np.random.default_rng(10))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(scan.points, before_p)
    np.testing.assert_array_equal(scan.boxes, before_b)
    assert aug(scan.points, None, rng=np.random.default_rng(9))[1] is None


def test_errors() -> None:
    pts = np.zeros((4, 4), np.float32)
    with pytest.raises(TypeError, match="rng"):
        RandomRotateZ()(pts, rng=np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boxes"):
        RandomRotateZ()(pts, np.zeros((2, 6)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="points"):
        RandomRotateZ()(np.zeros((4, 2), np.float32), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="low"):
        RandomScale(1.2, 1.0)
    with pytest.raises(TypeError, match="transforms"):
        Compose([RandomFlip(), 3])
