"""KITTI camera-frame labels -> LiDAR-frame boxes with hand-made calibrations; the shared real frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import data_file
from torchsparse_lite.datasets.kitti_detection import (
    KittiDetection,
    camera_boxes_to_lidar,
    lidar_boxes_to_camera,
    load_boxes_json,
    parse_calib,
    parse_labels,
)

from torchsparse_lite.detection.data import points_in_boxes

# Tr_velo_to_cam: cam x = -lidar y, cam y = -lidar z - 0.08, cam z = lidar x - 0.27; R0_rect = identity.
CALIB = """P0: 1 0 0 0 0 1 0 0 0 0 1 0
R0_rect: 1 0 0 0 1 0 0 0 1
Tr_velo_to_cam: 0 -1 0 0 0 0 -1 -0.08 1 0 0 -0.27
Tr_imu_to_velo: 1 0 0 0 0 1 0 0 0 0 1 0
"""
LABELS = """Car 0.00 0 -1.58 587.0 173.3 614.1 200.1 1.50 1.80 4.00 1.00 1.60 10.00 0.00
Pedestrian 0.00 0 0.21 423.1 173.6 433.1 201.1 1.75 0.60 0.80 -2.00 1.70 8.00 -1.5707963
Van 0.00 0 1.0 0 0 10 10 2.0 1.9 5.0 4.0 1.7 20.0 0.3
DontCare -1 -1 -10 0 0 10 10 -1 -1 -1 -1000 -1000 -1000 -10
"""


def test_parse_and_convert_hand_made_calib():
    calib = parse_calib(CALIB)
    labels = parse_labels(LABELS)
    assert [lab.name for lab in labels] == ["Car", "Pedestrian", "Van", "DontCare"]
    car, ped = labels[0], labels[1]
    boxes = camera_boxes_to_lidar(
        np.array([car.location, ped.location]),
        np.array([car.hwl, ped.hwl]),
        np.array([car.rotation_y, ped.rotation_y]),
        calib,
    )
    # car: bottom centre (1, 1.6, 10) in the camera -> LiDAR (10.27, -1, -1.68); centre z + h/2 = -0.93.
    # rotation_y = 0 points along camera +x = LiDAR -y: yaw = -pi/2.
    np.testing.assert_allclose(boxes[0], [10.27, -1.0, -0.93, 4.0, 1.8, 1.5, -math.pi / 2], atol=1e-5)
    # pedestrian: rotation_y = -pi/2 faces camera +z = LiDAR +x: yaw 0.
    np.testing.assert_allclose(boxes[1], [8.27, 2.0, -1.78 + 0.875, 0.8, 0.6, 1.75, 0.0], atol=1e-5)


def _rot(axis: int, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    m = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


@pytest.mark.parametrize("seed", range(3))
def test_roundtrip_with_rectification(seed):
    rng = np.random.default_rng(seed)
    r0 = _rot(0, 0.01 * rng.normal()) @ _rot(1, 0.01 * rng.normal())
    tr = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=float) @ _rot(2, 0.02 * rng.normal())
    t = rng.normal(0, 0.3, 3)
    text = f"R0_rect: {' '.join(map(str, r0.ravel()))}\nTr_velo_to_cam: " + " ".join(
        map(str, np.column_stack([tr, t]).ravel())
    )
    calib = parse_calib(text)
    boxes = np.column_stack(
        [
            rng.uniform(0, 40, 5),
            rng.uniform(-10, 10, 5),
            rng.uniform(-2, 0, 5),
            rng.uniform(0.5, 5, (5, 3)),
            rng.uniform(-3, 3, 5),
        ]
    )
    loc, hwl, ry = lidar_boxes_to_camera(boxes, calib)
    back = camera_boxes_to_lidar(loc, hwl, ry, calib)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-4)
    np.testing.assert_allclose(np.cos(back[:, 6] - boxes[:, 6]), 1.0, atol=1e-6)
    assert np.all(back[:, 6] >= -math.pi) and np.all(back[:, 6] < math.pi)


def test_calib_missing_entry():
    with pytest.raises(ValueError, match="R0_rect and Tr_velo_to_cam"):
        parse_calib("P2: 1 2 3")
    with pytest.raises(ValueError, match="fields"):
        parse_labels("Car 0 0")


def test_kitti_folder_loader(tmp_path):
    for sub in ("velodyne", "label_2", "calib"):
        (tmp_path / sub).mkdir()
    pts = np.array([[10.27, -1.0, -0.9, 0.5], [8.27, 2.0, -1.0, 0.2], [30.0, 0.0, 0.0, 0.1]], dtype=np.float32)
    pts.tofile(tmp_path / "velodyne" / "000001.bin")
    (tmp_path / "label_2" / "000001.txt").write_text(LABELS)
    (tmp_path / "calib" / "000001.txt").write_text(CALIB)
    pts.tofile(tmp_path / "velodyne" / "000002.bin")  # no label: skipped
    ds = KittiDetection(tmp_path)
    assert ds.ids == ["000001"] and len(ds) == 1
    item = ds[0]
    assert item["points"].shape == (3, 4)
    assert item["labels"].tolist() == [0, 1]  # Van and DontCare dropped
    assert item["boxes"].shape == (2, 7)
    assert points_in_boxes(item["points"], item["boxes"]).tolist() == [1, 1]
    with pytest.raises(FileNotFoundError, match="has no velodyne"):
        KittiDetection(tmp_path / "velodyne")


def test_shared_frame_boxes_enclose_points(kitti_points):
    boxes, labels = load_boxes_json(data_file("kitti/000008_boxes.json"))
    assert boxes.shape == (6, 7) and labels.tolist() == [0] * 6
    counts = points_in_boxes(kitti_points, boxes)
    assert counts.min() >= 55 and counts.max() <= 1900  # the data README's figures
