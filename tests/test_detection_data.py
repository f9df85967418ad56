"""Detection samples: points-in-box counts, filtering, and augmentation that moves boxes with points."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torchsparse_lite.datasets.augment import RandomFlip, RandomRotateZ, RandomScale, default_augmentation

from torchsparse_lite.detection.data import DetectionSample, augment_sample, filter_boxes, points_in_boxes, toy_sample


def test_points_in_boxes_hand_case():
    boxes = np.array([[0, 0, 0, 4, 2, 2, 0], [0, 0, 0, 4, 2, 2, math.pi / 2]], dtype=np.float32)
    pts = np.array([[1.9, 0.0, 0.0], [0.0, 1.9, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 1.5]])
    assert points_in_boxes(pts, boxes).tolist() == [2, 2]


def test_toy_sample_objects_hold_points():
    s = toy_sample(3)
    assert s.points.dtype == np.float32 and s.points.shape[1] == 4
    assert len(s.boxes) == len(s.labels) == 6
    assert points_in_boxes(s.points, s.boxes).min() > 50


def test_filter_boxes_by_range_and_points():
    s = toy_sample(4)
    half = filter_boxes(s, (0.0, -50.0, -3.0, 50.0, 50.0, 1.0))
    assert np.all(half.boxes[:, 0] >= 0) and len(half.boxes) == int((s.boxes[:, 0] >= 0).sum())
    assert len(filter_boxes(s, (-50, -50, -3, 50, 50, 1), min_points=10**6).boxes) == 0


@pytest.mark.parametrize(
    "transform", [RandomRotateZ(), RandomFlip(1.0, 0.0), RandomFlip(0.0, 1.0), RandomScale(0.9, 1.1)], ids=repr
)
def test_augmentation_moves_boxes_with_points(transform):
    s = toy_sample(5)
    before = points_in_boxes(s.points, s.boxes)
    out = augment_sample(s, transform, np.random.default_rng(0))
    assert isinstance(out, DetectionSample) and out.points.shape == s.points.shape
    assert not np.allclose(out.boxes, s.boxes)
    np.testing.assert_array_equal(points_in_boxes(out.points, out.boxes), before)


def test_default_augmentation_keeps_box_contents():
    s = toy_sample(6)
    out = augment_sample(s, default_augmentation(jitter=False), np.random.default_rng(1))
    np.testing.assert_array_equal(points_in_boxes(out.points, out.boxes), points_in_boxes(s.points, s.boxes))
