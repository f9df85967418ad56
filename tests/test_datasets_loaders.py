"""Real-file loaders (SemanticKITTI, KITTI, nuScenes, open3d) and their corrupt-file errors."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file
from torchsparse_lite.datasets import (
    LEARNING_MAP,
    SEMANTICKITTI_CLASSES,
    load_kitti_bin,
    load_nuscenes_bin,
    load_point_file,
    load_semantickitti,
)
from torchsparse_lite.datasets.semantickitti import load_semantickitti_labels, map_labels


def _open3d_importable() -> bool:
    try:
        importlib.import_module("open3d")
    except ImportError:
        return False
    return True


HAS_OPEN3D = _open3d_importable()

# Raw semantic-id histogram of semantickitti/000000.label, read once with np.unique and kept as data.
RAW_HISTOGRAM = {
    0: 4458, 1: 5, 10: 544, 11: 20, 30: 23, 40: 20975, 44: 84, 48: 30092, 50: 2126, 51: 531, 52: 809,
    70: 24514, 71: 3978, 72: 30925, 80: 413, 81: 1112, 99: 1652, 252: 990, 254: 138,
}  # fmt: skip


def test_learning_map_is_the_official_one() -> None:
    assert len(SEMANTICKITTI_CLASSES) == 19 and len(LEARNING_MAP) == 34
    name = {i: n for i, n in enumerate(SEMANTICKITTI_CLASSES)}
    expected = {10: "car", 252: "car", 11: "bicycle", 15: "motorcycle", 18: "truck", 258: "truck",
                13: "other-vehicle", 259: "other-vehicle", 30: "person", 254: "person", 31: "bicyclist",
                253: "bicyclist", 32: "motorcyclist", 255: "motorcyclist", 40: "road", 60: "road",
                44: "parking", 48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence",
                70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign"}  # fmt: skip
    for raw, cls in expected.items():
        assert name[LEARNING_MAP[raw]] == cls, raw
    for raw in (0, 1, 52, 99):
        assert LEARNING_MAP[raw] == 255
    assert set(LEARNING_MAP.values()) == set(range(19)) | {255}


def test_semantickitti_real_scan() -> None:
    points, labels = load_semantickitti(data_file("semantickitti/000000.bin"), data_file("semantickitti/000000.label"))
    assert points.shape == (123_389, 4) and points.dtype == np.float32
    assert labels.shape == (123_389,) and labels.dtype == np.int64
    hist = np.bincount(labels[labels != 255], minlength=19)
    expected = np.zeros(19, dtype=np.int64)
    for raw, count in RAW_HISTOGRAM.items():
        if LEARNING_MAP[raw] != 255:
            expected[LEARNING_MAP[raw]] += count
    np.testing.assert_array_equal(hist, expected)
    assert (labels == 255).sum() == 4458 + 5 + 809 + 1652
    top = [SEMANTICKITTI_CLASSES[i] for i in np.argsort(hist)[::-1][:4]]
    assert set(top) == {"terrain", "sidewalk", "vegetation", "road"}
    # Sanity of the geometry: car points sit above the road, remission within [0, 1].
    car, road = labels == 0, labels == 8
    assert np.median(points[car, 2]) > np.median(points[road, 2])
    assert 0.0 <= points[:, 3].min() and points[:, 3].max() <= 1.0
    _, inst = load_semantickitti_labels(data_file("semantickitti/000000.label"))
    assert inst[car].max() > 0  # cars carry instance ids
    only_points, none = load_semantickitti(data_file("semantickitti/000000.bin"))
    assert none is None and np.array_equal(only_points, points)


def test_kitti_real_scan() -> None:
    points = load_kitti_bin(data_file("kitti/000008.bin"))
    assert points.shape == (17_238, 4) and points.dtype == np.float32
    assert (points[:, 0] > 0).mean() > 0.99  # cropped to the front camera's view


def test_nuscenes_real_scan() -> None:
    points = load_nuscenes_bin(data_file("nuscenes/lidar_top_1532402927647951.bin"))
    assert points.shape == (34_688, 5) and points.dtype == np.float32
    ring = points[:, 4]
    assert np.array_equal(ring, np.round(ring)) and ring.min() == 0 and ring.max() == 31
    assert 0 <= points[:, 3].min() and points[:, 3].max() <= 255


def test_load_point_file_dispatches_bin() -> None:
    path = data_file("nuscenes/lidar_top_1532402927647951.bin")
    assert load_point_file(path, fmt="nuscenes").shape == (34_688, 5)
    assert load_point_file(data_file("kitti/000008.bin"), fmt="kitti").shape == (17_238, 4)
    with pytest.raises(ValueError, match="fmt"):
        load_point_file(path)


# ------------------------------------------------------------------ corrupt files
def _write(path: Path, array: np.ndarray) -> Path:
    array.tofile(path)
    return path


@pytest.mark.parametrize(
    ("loader", "fields"), [(load_kitti_bin, 4), (load_nuscenes_bin, 5), (lambda p: load_semantickitti(p)[0], 4)]
)
def test_truncated_scan_raises(tmp_path: Path, loader, fields: int) -> None:
    good = np.random.default_rng(0).random((10, fields)).astype(np.float32)
    path = _write(tmp_path / "scan.bin", good.reshape(-1)[:-1])
    with pytest.raises(ValueError, match="scan.bin"):
        loader(path)
    empty = _write(tmp_path / "empty.bin", np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="empty.bin"):
        loader(empty)
    with pytest.raises(FileNotFoundError):
        loader(tmp_path / "absent.bin")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_points_raise(tmp_path: Path, bad: float) -> None:
    pts = np.random.default_rng(1).random((20, 4)).astype(np.float32)
    pts[7, 1] = bad
    path = _write(tmp_path / "nan_scan.bin", pts)
    with pytest.raises(ValueError, match="nan_scan.bin"):
        load_kitti_bin(path)


def test_nuscenes_rejects_kitti_sized_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "sweep.pcd.bin", np.zeros((3, 4), np.float32))  # 48 bytes: 3 KITTI points
    with pytest.raises(ValueError, match="sweep.pcd.bin"):
        load_nuscenes_bin(path)


def test_label_errors(tmp_path: Path) -> None:
    pts = _write(tmp_path / "000001.bin", np.random.default_rng(2).random((30, 4)).astype(np.float32))
    short = _write(tmp_path / "short.label", np.full(29, 40, dtype=np.uint32))
    with pytest.raises(ValueError, match="short.label"):
        load_semantickitti(pts, short)
    odd = tmp_path / "odd.label"
    odd.write_bytes(b"\x00" * 118)
    with pytest.raises(ValueError, match="odd.label"):
        load_semantickitti(pts, odd)
    unknown = _write(tmp_path / "unknown.label", np.full(30, 41, dtype=np.uint32))
    with pytest.raises(ValueError, match="unknown.label"):
        load_semantickitti(pts, unknown)
    ok = np.full(30, 40, dtype=np.uint32) | (np.arange(30, dtype=np.uint32) << 16)
    _, labels = load_semantickitti(pts, _write(tmp_path / "ok.label", ok))
    assert (labels == SEMANTICKITTI_CLASSES.index("road")).all()
    np.testing.assert_array_equal(map_labels(np.array([0, 10, 252, 60])), [255, 0, 0, 8])


# ----------------------------------------------------------------------- open3d
@pytest.mark.skipif(HAS_OPEN3D, reason="open3d is installed: the missing-dependency message cannot be checked")
@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_open3d_missing_names_the_extra(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cloud{suffix}"
    path.write_text("not read")
    with pytest.raises(ImportError, match=r'pip install "torchsparse_lite\[viz\]"'):
        load_point_file(path)


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_open3d_round_trip(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("open3d", exc_type=ImportError)
    from torchsparse_lite.datasets.open3d_io import save_point_file  # noqa: PLC0415 - after the skip

    pts = np.random.default_rng(3).random((100, 4)).astype(np.float32)
    path = save_point_file(tmp_path / f"cloud{suffix}", pts)
    back = load_point_file(path)
    np.testing.assert_allclose(back[:, :3], pts[:, :3], atol=1e-5)
    np.testing.assert_allclose(back[:, 3], pts[:, 3], atol=2e-3)  # grey colours are stored as 8-bit in .ply


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "cloud.xyz"
    path.write_text("0 0 0\n")
    with pytest.raises(ValueError, match=".xyz"):
        load_point_file(path)
