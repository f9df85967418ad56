"""Synthetic LiDAR generator: determinism, size, ring structure, range density, occlusion, labels, boxes."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from conftest import data_file
from torchsparse_lite.datasets.synthetic import (
    DETECTION_CLASSES,
    HDL64_ELEVATIONS_DEG,
    INDOOR_CLASSES,
    OUTDOOR_CLASSES,
    Scan,
    generate_scan,
)
from torchsparse_lite.datasets.synthetic.compare import compare_with_real, scan_statistics

SEEDS = (0, 1, 2)
SENSOR_HEIGHT = 1.73
# Semantic class of the points of each detection class.
DET_TO_SEM = {"car": "car", "pedestrian": "person", "cyclist": "cyclist"}


@pytest.fixture(scope="module")
def scans() -> dict[int, Scan]:
    return {s: generate_scan(s) for s in SEEDS}


@pytest.fixture(scope="module")
def indoor_scans() -> dict[int, Scan]:
    return {s: generate_scan(s, "indoor") for s in SEEDS}


def to_box_frame(xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[N, 3] points in the frame of a [7] box (origin at its centre, x along its length)."""
    c, s = math.cos(box[6]), math.sin(box[6])
    d = xyz - box[:3]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)


def in_box(xyz: np.ndarray, box: np.ndarray, margin: float = 0.0) -> np.ndarray:
    local = to_box_frame(xyz, box)
    return (np.abs(local) <= box[3:6] / 2 + margin).all(axis=1)


def test_deterministic_from_seed() -> None:
    a, b, c = generate_scan(7), generate_scan(7), generate_scan(8)
    for field in ("points", "labels", "boxes", "box_labels", "box_num_points", "instances", "ring"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)


@pytest.mark.parametrize("seed", SEEDS)
def test_outdoor_scan_layout(scans: dict[int, Scan], seed: int) -> None:
    s = scans[seed]
    n = len(s)
    assert 85_000 <= n <= 125_000, n
    assert s.points.dtype == np.float32 and s.points.shape == (n, 4)
    assert s.labels.dtype == np.int64 and s.labels.shape == (n,)
    assert s.labels.min() >= 0 and s.labels.max() < len(OUTDOOR_CLASSES)
    assert s.boxes.dtype == np.float32 and s.boxes.shape[1] == 7 and s.boxes.shape[0] >= 5
    assert s.box_labels.dtype == np.int64 and s.box_labels.shape == (s.boxes.shape[0],)
    assert s.box_num_points.shape == (s.boxes.shape[0],)
    assert np.isfinite(s.points).all()
    assert 0.0 <= s.points[:, 3].min() and s.points[:, 3].max() <= 1.0
    road = s.points[s.labels == OUTDOOR_CLASSES.index("road")]
    np.testing.assert_allclose(np.median(road[:, 2]), -SENSOR_HEIGHT, atol=0.02)


def test_ring_structure(scans: dict[int, Scan]) -> None:
    """Elevation angles fall into 64 tight clusters at the beam elevations, one per ring."""
    for s in scans.values():
        xyz = s.points[:, :3].astype(np.float64)
        el = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
        srt = np.sort(el)
        breaks = np.nonzero(np.diff(srt) > 0.1)[0]
        sizes = np.diff(np.concatenate([[0], breaks + 1, [srt.size]]))
        assert (sizes >= 20).sum() == 64, sizes
        np.testing.assert_allclose(el, HDL64_ELEVATIONS_DEG[s.ring], atol=0.01)
        assert np.bincount(s.ring, minlength=64).min() > 50


def test_density_falls_with_range(scans: dict[int, Scan]) -> None:
    edges = np.array([4.0, 8.0, 16.0, 32.0, 64.0])
    for s in scans.values():
        r = np.hypot(s.points[:, 0], s.points[:, 1])
        counts = np.histogram(r, edges)[0]
        density = counts / (np.pi * (edges[1:] ** 2 - edges[:-1] ** 2))
        assert (np.diff(density) < 0).all(), density
        assert density[0] > 20 * density[-1], density


def test_occlusion_nothing_seen_through_cars(scans: dict[int, Scan]) -> None:
    """No return lies behind the solid core of a car along its own ray (z-buffered casting)."""
    car = DETECTION_CLASSES.index("car")
    through_core = 0
    for s in scans.values():
        xyz_all = s.points[:, :3].astype(np.float64)
        dir_xy = xyz_all[:, :2] / np.linalg.norm(xyz_all[:, :2], axis=1, keepdims=True)
        for i in np.nonzero(s.box_labels == car)[0]:
            box = s.boxes[i].astype(np.float64)
            l, w, h = box[3:6]
            # Only points whose azimuth is near the box can have rays through it.
            dist = np.hypot(box[0], box[1])
            near = dir_xy @ (box[:2] / dist) > math.cos(math.asin(min(1.0, 0.5 * math.hypot(l, w) / dist)))
            idx = np.nonzero(near)[0]
            # Solid core: shrunk footprint, from 0.3 m above the bottom to half the height.
            core_c = np.array([0.0, 0.0, -h / 2 + (0.3 + 0.5 * h) / 2])
            core_half = np.array([l / 2 - 0.15, w / 2 - 0.15, (0.5 * h - 0.3) / 2 - 0.02])
            o = to_box_frame(np.zeros((1, 3)), box)[0] - core_c
            d = to_box_frame(xyz_all[idx], box) - core_c - o
            with np.errstate(divide="ignore", invalid="ignore"):
                t1, t2 = (-core_half - o) / d, (core_half - o) / d
            tnear = np.nanmax(np.minimum(t1, t2), axis=1)
            tfar = np.nanmin(np.maximum(t1, t2), axis=1)
            ray_meets_core = (tnear <= tfar) & (tfar > 0)  # t = 1 at the point itself
            mine = s.instances[idx] == i
            assert not (ray_meets_core & ~mine & (tnear < 0.98)).any(), f"a point is seen through car {i}"
            through_core += int((ray_meets_core & mine).sum())
    assert through_core > 1000  # many rays aim at the cores and stop on the car: the check is not vacuous


def test_every_class_present() -> None:
    outdoor = np.zeros(len(OUTDOOR_CLASSES), dtype=np.int64)
    for seed in SEEDS:
        outdoor += np.bincount(generate_scan(seed, num_azimuth=900).labels, minlength=len(OUTDOOR_CLASSES))
    assert (outdoor > 0).all(), dict(zip(OUTDOOR_CLASSES, outdoor.tolist()))
    indoor = np.zeros(len(INDOOR_CLASSES), dtype=np.int64)
    for seed in SEEDS:
        indoor += np.bincount(generate_scan(seed, "indoor", width=96, height=96).labels, minlength=len(INDOOR_CLASSES))
    assert (indoor > 0).all(), dict(zip(INDOOR_CLASSES, indoor.tolist()))


@pytest.mark.parametrize("seed", SEEDS)
def test_boxes_contain_their_points(scans: dict[int, Scan], seed: int) -> None:
    s = scans[seed]
    xyz = s.points[:, :3]
    sem_of = {k: OUTDOOR_CLASSES.index(DET_TO_SEM[name]) for k, name in enumerate(DETECTION_CLASSES)}
    np.testing.assert_array_equal(s.box_num_points, np.bincount(s.instances[s.instances >= 0], minlength=len(s.boxes)))
    covered = np.zeros(len(s), dtype=bool)
    for i, (box, lab) in enumerate(zip(s.boxes, s.box_labels)):
        mine = s.instances == i
        assert in_box(xyz[mine], box, margin=0.06).all()
        assert (s.labels[mine] == sem_of[int(lab)]).all()
        covered |= mine
    # Every object-class point belongs to some box; stuff points have no instance.
    object_sem = np.isin(s.labels, list(sem_of.values()))
    np.testing.assert_array_equal(covered, object_sem)
    assert (s.box_num_points > 0).sum() >= 3


def test_box_sizes_and_placement(scans: dict[int, Scan]) -> None:
    boxes = np.concatenate([s.boxes for s in scans.values()])
    labels = np.concatenate([s.box_labels for s in scans.values()])
    cars = boxes[labels == 0]
    assert len(cars) >= 20
    np.testing.assert_allclose(np.median(cars[:, 3:6], axis=0), [4.2, 1.8, 1.6], atol=0.25)
    np.testing.assert_allclose(cars[:, 2] - cars[:, 5] / 2, -SENSOR_HEIGHT, atol=1e-4)  # on the road
    # Most cars follow the street; some (moving) cars take random headings.
    off_axis = 0
    for s in scans.values():
        yaw = s.boxes[s.box_labels == 0, 6].astype(np.float64)
        axis = 0.5 * math.atan2(np.sin(2 * yaw).mean(), np.cos(2 * yaw).mean())  # street axis (mod pi)
        rel = np.mod(yaw - axis + np.pi / 2, np.pi) - np.pi / 2
        off_axis += int((np.abs(rel) > 0.3).sum())
        assert (np.abs(rel) < 0.15).mean() > 0.5
    assert off_axis >= 2
    ped, cyc = boxes[labels == 1], boxes[labels == 2]
    assert len(ped) and len(cyc)
    np.testing.assert_allclose(np.median(ped[:, 3:6], axis=0), [0.6, 0.6, 1.7], atol=0.15)
    np.testing.assert_allclose(np.median(cyc[:, 3:6], axis=0), [1.8, 0.6, 1.7], atol=0.15)
    assert (np.abs(boxes[:, 6]) <= np.pi + 1e-6).all()


def test_indoor_scan(indoor_scans: dict[int, Scan]) -> None:
    for s in indoor_scans.values():
        assert 80_000 <= len(s) <= 110_000
        assert s.class_names == INDOOR_CLASSES and s.kind == "indoor"
        r = np.linalg.norm(s.points[:, :3], axis=1)
        assert r.max() < 12.0 and r.min() > 0.3
        # RGB-D-like: pixels fill the whole +-40 deg field of view (a spinning LiDAR sees +2 .. -25 deg only).
        el = np.degrees(np.arctan2(s.points[:, 2], np.hypot(s.points[:, 0], s.points[:, 1])))
        assert (np.histogram(el, np.arange(-40.0, 41.0, 1.0))[0] > 100).all()
        g = np.floor(s.points[:, :3] / 0.05).astype(np.int64) + 512  # rooms span < 25 m: 10 bits an axis
        cells = np.unique((g[:, 0] << 20) | (g[:, 1] << 10) | g[:, 2]).size
        assert len(s) / cells > 1.5
        floor = s.points[s.labels == INDOOR_CLASSES.index("floor")]
        ceiling = s.points[s.labels == INDOOR_CLASSES.index("ceiling")]
        assert 2.4 < np.median(ceiling[:, 2]) - np.median(floor[:, 2]) < 3.3


def test_options_and_errors() -> None:
    small = generate_scan(0, num_beams=16, num_azimuth=256)
    assert small.ring.max() < 16 and len(small) < 16 * 256
    with pytest.raises(ValueError, match="kind"):
        generate_scan(0, "underwater")
    with pytest.raises(TypeError, match="num_azimuthh"):
        generate_scan(0, num_azimuthh=10)
    with pytest.raises(ValueError, match="seed"):
        generate_scan(-1)


def test_generation_time() -> None:
    """One outdoor scan takes well under the ~2 s budget (loose bound: the CPU is shared)."""
    t = time.perf_counter()
    generate_scan(11)
    assert time.perf_counter() - t < 8.0


def test_scan_statistics_known_cloud() -> None:
    pts = np.array([[3.0, 4.0, 0.0], [30.0, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.01, 0.0]], dtype=np.float32)
    st = scan_statistics(pts, voxel_sizes=(0.05, 1.0))
    assert st["num_points"] == 4 and st["voxels"] == {"0.05": 3, "1.0": 3}
    assert st["range_fraction"] == [0.5, 0.25, 0.0, 0.25, 0.0, 0.0]
    assert st["median_range"] == pytest.approx(2.51, abs=0.01)


def test_sparsity_profile_close_to_real_scan(tmp_path) -> None:
    """Range profile of synthetic scans within 0.1 (share of points per bin) of the real SemanticKITTI scan."""
    real = data_file("semantickitti/000000.bin")
    report = compare_with_real(real, [0, 1], tmp_path)
    assert (tmp_path / "stats.json").is_file() and (tmp_path / "synthetic_vs_real.png").stat().st_size > 10_000
    assert report["real"]["num_points"] == 123_389
    diff = np.abs(np.subtract(report["synthetic_mean"]["range_fraction"], report["real"]["range_fraction"]))
    assert diff.max() < 0.1, diff
    for s in (report["real"], *report["synthetic"]):
        assert sum(s["elevation_fraction"]) > 0.99  # all returns between -26 and +4 degrees
        assert 1.0 < s["points_per_voxel"]["0.05"] < 1.6
