"""Rotated BEV / 3D IoU and NMS against hand-computed overlaps and a raster reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchsparse_lite.detection.iou import bev_corners, bev_iou, bev_overlap, iou_3d, quad_intersection_area
from torchsparse_lite.detection.nms import circle_nms, rotated_nms


def box(x=0.0, y=0.0, z=0.0, l=1.0, w=1.0, h=1.0, yaw=0.0) -> torch.Tensor:
    return torch.tensor([[x, y, z, l, w, h, yaw]], dtype=torch.float64)


@pytest.mark.parametrize("yaw", [0.0, 0.3, math.pi / 4, -2.0, math.pi])
@pytest.mark.parametrize("size", [(1.0, 1.0, 1.0), (4.2, 1.8, 1.5), (0.6, 0.7, 1.8)])
def test_identical_boxes_iou_one(yaw, size):
    b = box(3.0, -2.0, -1.0, *size, yaw=yaw)
    assert bev_iou(b, b).item() == pytest.approx(1.0, abs=1e-9)
    assert iou_3d(b, b).item() == pytest.approx(1.0, abs=1e-9)


def test_unit_squares_rotated_45_degrees():
    # The overlap of a unit square and the same square turned by 45 degrees is a
    # regular octagon with inradius 1/2: area 8 * (1/2)^2 * tan(pi/8) = 2 (sqrt 2 - 1).
    inter = 2 * (math.sqrt(2) - 1)
    a, b = box(), box(yaw=math.pi / 4)
    assert bev_overlap(a, b).item() == pytest.approx(inter, abs=1e-9)
    assert bev_iou(a, b).item() == pytest.approx(inter / (2 - inter), abs=1e-9)
    assert iou_3d(a, b).item() == pytest.approx(inter / (2 - inter), abs=1e-9)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (box(), box(x=0.5), 0.5 / 1.5),  # half-shifted squares
        (box(), box(x=0.5, y=0.5), 0.25 / 1.75),  # quarter overlap
        (box(l=2.0), box(l=2.0, yaw=math.pi / 2), 1.0 / 3.0),  # 2x1 cross: overlap 1x1
        (box(), box(x=1.5), 0.0),  # disjoint
        (box(), box(x=1.0), 0.0),  # touching edges
        (box(l=2.0, w=2.0), box(yaw=0.7), 0.25),  # rotated unit square inside a 2x2 square
        (box(yaw=math.pi), box(), 1.0),  # heading does not matter for the footprint
    ],
)
def test_known_bev_overlaps(a, b, expected):
    assert bev_iou(a, b).item() == pytest.approx(expected, abs=1e-9)
    assert bev_iou(b, a).item() == pytest.approx(expected, abs=1e-9)


def test_3d_iou_height_overlap():
    a, b = box(), box(x=0.5, z=0.5)  # BEV overlap 0.5, height overlap 0.5 -> 0.25 of 1 + 1 - 0.25
    assert iou_3d(a, b).item() == pytest.approx(0.25 / 1.75, abs=1e-9)
    assert iou_3d(a, box(z=1.5)).item() == 0.0


def test_corners_counter_clockwise_and_rotated():
    c = bev_corners(box(1.0, 2.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2))[0]
    # length along +y after a quarter turn: front corners at y = 2 + 2
    assert torch.allclose(c, torch.tensor([[0.0, 4.0], [0.0, 0.0], [2.0, 0.0], [2.0, 4.0]], dtype=c.dtype), atol=1e-9)
    x, y = c[:, 0], c[:, 1]
    signed = 0.5 * (x * torch.roll(y, -1) - torch.roll(x, -1) * y).sum()
    assert signed.item() == pytest.approx(8.0)


def _raster_overlap(a: np.ndarray, b: np.ndarray, n: int = 600) -> float:
    """Area of the intersection by counting grid cell centres inside both rectangles."""
    lo = np.minimum(a[:2], b[:2]) - 4
    hi = np.maximum(a[:2], b[:2]) + 4
    xs = np.linspace(lo[0], hi[0], n)
    ys = np.linspace(lo[1], hi[1], n)
    gx, gy = np.meshgrid(xs, ys)

    def inside(bx):
        dx, dy = gx - bx[0], gy - bx[1]
        c, s = math.cos(bx[6]), math.sin(bx[6])
        return (np.abs(c * dx + s * dy) <= bx[3] / 2) & (np.abs(-s * dx + c * dy) <= bx[4] / 2)

    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    return float((inside(a) & inside(b)).sum() * cell)


@pytest.mark.parametrize("seed", range(4))
def test_random_pairs_match_raster(seed):
    rng = np.random.default_rng(seed)
    a = np.array([0, 0, 0, *rng.uniform(0.5, 4.0, 2), 1, rng.uniform(-3, 3)])
    b = np.array([*rng.uniform(-1.5, 1.5, 2), 0, *rng.uniform(0.5, 4.0, 2), 1, rng.uniform(-3, 3)])
    got = bev_overlap(torch.tensor(a)[None], torch.tensor(b)[None]).item()
    assert got == pytest.approx(_raster_overlap(a, b), abs=0.06)


def test_pairwise_shape_and_symmetry():
    rng = np.random.default_rng(0)
    a = torch.tensor(np.column_stack([rng.uniform(-3, 3, (5, 3)), rng.uniform(0.5, 3, (5, 3)), rng.uniform(-3, 3, 5)]))
    b = torch.tensor(np.column_stack([rng.uniform(-3, 3, (4, 3)), rng.uniform(0.5, 3, (4, 3)), rng.uniform(-3, 3, 4)]))
    ab, ba = bev_iou(a, b), bev_iou(b, a)
    assert ab.shape == (5, 4)
    assert torch.allclose(ab, ba.T, atol=1e-9)
    assert bool(((ab >= 0) & (ab <= 1 + 1e-9)).all())
    assert bev_iou(a, a[:0]).shape == (5, 0)


def test_quad_intersection_empty_and_bad_input():
    assert quad_intersection_area(torch.zeros(0, 4, 2), torch.zeros(0, 4, 2)).shape == (0,)
    with pytest.raises(ValueError, match="x, y, z, l, w, h, yaw"):
        bev_iou(torch.zeros(2, 5), torch.zeros(2, 7))


def test_rotated_nms_suppresses_overlaps_only():
    boxes = torch.cat([box(), box(x=0.1, yaw=0.1), box(x=5.0), box(x=5.2, yaw=math.pi / 4), box(x=10.0)])
    scores = torch.tensor([0.9, 0.95, 0.5, 0.4, 0.1])
    keep = rotated_nms(boxes, scores, 0.3)
    assert keep.tolist() == [1, 2, 4]
    assert rotated_nms(boxes, scores, 0.99).tolist() == [1, 0, 2, 3, 4]


def test_circle_nms():
    boxes = torch.cat([box(), box(x=0.5), box(x=3.0)])
    scores = torch.tensor([0.2, 0.9, 0.5])
    assert circle_nms(boxes, scores, 1.0).tolist() == [1, 2]
    assert circle_nms(boxes, scores, torch.tensor([1.0, 0.1, 1.0])).tolist() == [1, 2, 0]
