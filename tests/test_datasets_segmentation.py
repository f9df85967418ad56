"""SegmentationDataset (synthetic and SemanticKITTI), voxel labels, collation, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_file
from torch.utils.data import DataLoader
from torchsparse_lite.datasets import OUTDOOR_CLASSES, SEMANTICKITTI_CLASSES, SegmentationDataset, collate_segmentation
from torchsparse_lite.datasets.voxelize import majority_labels, voxelize_points

from torchsparse_lite import SparseTensor

SMALL = {"num_azimuth": 256}  # ~13 k points a scan: keeps these tests fast


def small_dataset(n: int = 4, **kw) -> SegmentationDataset:
    return SegmentationDataset.synthetic(n, seed=3, scan_kwargs=SMALL, **kw)


def test_item_layout_and_inverse() -> None:
    ds = small_dataset(voxel_size=0.2)
    assert len(ds) == 4 and ds.in_channels == 4 and ds.ignore_index == 255
    assert ds.num_classes == len(OUTDOOR_CLASSES) and ds.class_names == OUTDOOR_CLASSES
    item = ds[1]
    points, labels = ds.load_scan(1)
    m, n = item["coords"].shape[0], points.shape[0]
    assert item["coords"].dtype == torch.int32 and item["coords"].shape == (m, 3)
    assert item["feats"].dtype == torch.float32 and item["feats"].shape == (m, 4)
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (m,)
    assert item["inverse"].dtype == torch.int64 and item["inverse"].shape == (n,)
    np.testing.assert_array_equal(item["point_labels"].numpy(), labels)
    # Every point falls in the voxel its inverse names; feats are voxel means (so inside the voxel too).
    grid = np.floor(points[:, :3].astype(np.float64) / 0.2).astype(np.int64)
    origin = grid.min(0)
    np.testing.assert_array_equal(item["coords"].numpy()[item["inverse"].numpy()], grid - origin)
    mean_grid = np.floor(item["feats"][:, :3].double().numpy() / 0.2).astype(np.int64) - origin
    np.testing.assert_array_equal(mean_grid, item["coords"].numpy())
    counts = np.bincount(item["inverse"].numpy(), minlength=m)
    mean_int = np.bincount(item["inverse"].numpy(), weights=points[:, 3], minlength=m) / counts
    np.testing.assert_allclose(item["feats"][:, 3].numpy(), mean_int, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_majority_labels_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m, c = 500, 40, 5
    inverse = rng.integers(0, m, n)
    inverse[:m] = np.arange(m)
    labels = rng.integers(0, c, n)
    labels[rng.random(n) < 0.3] = 255
    labels[inverse == 7] = 255  # one voxel with only ignored points
    got = majority_labels(torch.from_numpy(inverse), torch.from_numpy(labels), m, c).numpy()
    for v in range(m):
        lab = labels[(inverse == v) & (labels != 255)]
        if lab.size == 0:
            assert got[v] == 255
        else:
            counts = np.bincount(lab, minlength=c)
            assert counts[got[v]] == counts.max()


def test_voxelize_rejects_bad_labels() -> None:
    pts = np.random.default_rng(0).random((10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="labels"):
        voxelize_points(pts, np.full(10, 9, dtype=np.int64), 0.1, num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        voxelize_points(pts, np.zeros(9, dtype=np.int64), 0.1, num_classes=3)


def test_deterministic_and_epoch_augmentation() -> None:
    a, b = small_dataset(augment=True), small_dataset(augment=True)
    x, y = a[2], b[2]
    for key in ("coords", "feats", "labels", "inverse"):
        assert torch.equal(x[key], y[key]), key
    a.set_epoch(1)
    z = a[2]
    assert not torch.equal(x["feats"], z["feats"])  # a new augmentation draw
    plain = small_dataset()[2]
    assert torch.equal(plain["point_labels"], z["point_labels"])  # augmentation never touches labels


def test_max_points_and_cache() -> None:
    ds = small_dataset(max_points=5000, cache=True)
    item = ds[0]
    assert item["inverse"].shape[0] == 5000 and item["point_labels"].shape[0] == 5000
    assert ds.load_scan(0)[0] is ds.load_scan(0)[0]  # cached
    with pytest.raises(IndexError):
        ds.load_scan(4)
    with pytest.raises(ValueError, match="voxel_size"):
        SegmentationDataset.synthetic(2, voxel_size=0.0)
    with pytest.raises(TypeError, match="scan_kwargs"):
        SegmentationDataset.synthetic(2, scan_kwargs={"bogus": 1})


def test_collate() -> None:
    ds = small_dataset(voxel_size=0.15)
    items = [ds[i] for i in range(3)]
    batch = collate_segmentation(items)
    x = batch["input"]
    assert isinstance(x, SparseTensor) and x.batch_size == 3
    sizes = [it["coords"].shape[0] for it in items]
    assert batch["offsets"].tolist() == [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    assert x.feats.shape == (sum(sizes), 4) and batch["labels"].shape == (sum(sizes),)
    for i, it in enumerate(items):
        lo, hi = batch["offsets"][i], batch["offsets"][i + 1]
        assert (x.coords[lo:hi, 0] == i).all()
        assert torch.equal(x.coords[lo:hi, 1:], it["coords"])
        assert torch.equal(batch["labels"][lo:hi], it["labels"])
        # Scoring every point through the inverse map.
        per_point = batch["labels"][lo:hi][batch["inverse"][i]]
        assert per_point.shape == batch["point_labels"][i].shape
    assert batch["index"] == [0, 1, 2]
    with pytest.raises(ValueError):
        collate_segmentation([])


def test_dataloader_workers_match_main_process() -> None:
    ds = small_dataset(n=4, augment=True)
    kw = {"batch_size": 2, "collate_fn": collate_segmentation, "shuffle": False}
    serial = list(DataLoader(ds, num_workers=0, **kw))
    parallel = list(DataLoader(ds, num_workers=2, **kw))
    assert len(serial) == len(parallel) == 2
    for s, p in zip(serial, parallel):
        assert torch.equal(s["input"].coords, p["input"].coords)
        assert torch.equal(s["input"].feats, p["input"].feats)
        assert torch.equal(s["labels"], p["labels"])


def test_indoor_dataset() -> None:
    ds = SegmentationDataset.synthetic(2, kind="indoor", voxel_size=0.05, scan_kwargs={"width": 64, "height": 64})
    item = ds[0]
    assert ds.num_classes == 10 and item["labels"].max() < 10


@pytest.mark.parametrize(("voxel_size", "expected"), [(0.05, 94_444), (0.1, 68_643), (0.2, 42_025)])
def test_semantickitti_dataset_real_scan(voxel_size: float, expected: int) -> None:
    """Voxel counts of the real scan match a float64 numpy voxelization and the data README.

    The README figures were computed in float32 (points / float32(voxel)); sparse_quantize divides in
    float64, which moves one boundary point at 0.1 m and 0.2 m: hence the tolerance of one voxel.
    """
    folder = data_file("semantickitti/000000.bin").parent
    ds = SegmentationDataset.semantickitti(folder, voxel_size=voxel_size)
    assert len(ds) == 1 and ds.num_classes == 19 and ds.class_names == SEMANTICKITTI_CLASSES
    item = ds[0]
    points, _ = ds.load_scan(0)
    grid = np.floor(points[:, :3].astype(np.float64) / voxel_size).astype(np.int64)
    assert item["coords"].shape[0] == np.unique(grid, axis=0).shape[0]
    assert abs(item["coords"].shape[0] - expected) <= 1
    assert item["inverse"].shape[0] == 123_389
    labelled = item["labels"] != 255
    assert labelled.float().mean() > 0.85  # 94 % of the points are labelled


def test_semantickitti_dataset_from_pairs(tmp_path) -> None:
    scan = data_file("semantickitti/000000.bin")
    ds = SegmentationDataset.semantickitti([(scan, scan.with_suffix(".label")), (scan, None)], voxel_size=0.2)
    assert len(ds) == 2
    assert (ds[1]["labels"] == 255).all() and torch.equal(ds[0]["coords"], ds[1]["coords"])
    with pytest.raises(FileNotFoundError):
        SegmentationDataset.semantickitti(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .bin"):
        SegmentationDataset.semantickitti(tmp_path)
