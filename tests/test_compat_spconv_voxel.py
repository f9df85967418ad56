"""Issue 11: ``torchsparse_lite.compat.spconv.utils.PointToVoxel`` against spconv 2.3.8's CPU generator.

Exact equality of voxels, zyx indices, points per voxel and per-point voxel
ids on the real KITTI frame and a synthetic scan, for several grids, capacity
limits and float32/float64 input; plus the conventions pinned down
independently (z-first order, the range is half-open, first-point order).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torchsparse_lite.datasets.synthetic import generate_scan

from torchsparse_lite.compat.spconv.utils import PointToVoxel, gather_features_by_pc_voxel_id

HAS_SPCONV = importlib.util.find_spec("spconv") is not None
needs_spconv = pytest.mark.skipif(not HAS_SPCONV, reason="spconv is not installed")
CONFIGS = {
    "second_kitti": ([0.05, 0.05, 0.1], [0, -40, -3, 70.4, 40, 1], 16000, 5),
    "pillars": ([0.16, 0.16, 4], [0, -39.68, -3, 69.12, 39.68, 1], 12000, 32),
    "truncated": ([0.1, 0.1, 0.2], [0, -40, -3, 70.4, 40, 1], 500, 3),
    "bev_2d": ([0.2, 0.2], [-40, -40, 40, 40], 20000, 4),
}


@pytest.fixture(scope="module")
def synthetic_points() -> np.ndarray:
    return generate_scan(1, num_beams=32, num_azimuth=600).points


@needs_spconv
@pytest.mark.parametrize("source", ["kitti", "synthetic"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_spconv_exactly(source, config, dtype, request):
    from spconv.pytorch.utils import PointToVoxel as SpconvPointToVoxel  # noqa: PLC0415 - optional peer

    points = request.getfixturevalue("kitti_points" if source == "kitti" else "synthetic_points")
    vsize, crange, max_voxels, max_points = CONFIGS[config]
    nf = 4 if len(vsize) == 3 else 3
    pc = torch.from_numpy(np.ascontiguousarray(points[:, :nf])).to(dtype)
    if nf == 3:  # a 2-D generator takes (x, y, feature): drop z, keep the intensity
        pc = pc[:, [0, 1, 2]].clone()
        pc[:, 2] = torch.from_numpy(points[:, 3]).to(dtype)
    theirs = SpconvPointToVoxel(vsize, crange, nf, max_voxels, max_points)
    ours = PointToVoxel(vsize, crange, nf, max_voxels, max_points)
    assert ours.grid_size == list(theirs.grid_size) and ours.grid_stride == list(theirs.grid_stride)
    assert ours.vsize == list(theirs.vsize) and ours.coors_range == list(theirs.coors_range)
    for _ in range(2):  # the persistent buffers are reused by the second call
        a, b = theirs.generate_voxel_with_id(pc), ours.generate_voxel_with_id(pc)
        for name, x, y in zip(("voxels", "indices", "num_per_voxel", "pc_voxel_id"), a, b):
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert b[0].shape[0] > 100 and (b[3] == -1).any()
    assert all(torch.equal(x, y) for x, y in zip(theirs(pc), ours(pc)))


def test_conventions():
    gen = PointToVoxel([1.0, 2.0, 4.0], [0, 0, 0, 4, 4, 8], 4, 10, 2)
    assert gen.grid_size == [2, 2, 4] and gen.vsize == [4.0, 2.0, 1.0]  # z, y, x
    pts = torch.tensor(
        [
            [3.5, 0.5, 5.0, 1.0],  # x=3, y=0, z=1
            [3.9, 1.9, 7.9, 2.0],  # same voxel
            [4.0, 0.0, 0.0, 3.0],  # x == x_max: outside (the range is half-open)
            [0.0, 0.0, 0.0, 4.0],  # the origin voxel, second in first-point order
            [3.2, 0.1, 4.1, 5.0],  # third point of voxel 0: over max_num_points_per_voxel
            [-0.1, 0.0, 0.0, 6.0],  # below x_min: outside
        ]
    )
    voxels, indices, num, pid = gen.generate_voxel_with_id(pts)
    assert indices.tolist() == [[1, 0, 3], [0, 0, 0]] and num.tolist() == [2, 1]
    assert pid.tolist() == [0, 0, -1, 1, 0, -1]  # points over the per-voxel cap keep their voxel id
    assert torch.equal(voxels[0], pts[:2]) and torch.equal(voxels[1, 1], torch.zeros(4))
    mean = gen(pts, empty_mean=True)[0]
    assert torch.equal(mean[1, 1], pts[3]) and torch.equal(mean[0], pts[:2])
    stale = gen(pts[3:4], clear_voxels=False)[0]  # spconv's persistent buffer: padding keeps old values
    assert torch.equal(stale[0, 0], pts[3]) and torch.equal(stale[0, 1], pts[1])
    assert torch.equal(gen(pts[3:4])[0][0, 1], torch.zeros(4))


def test_capacity_and_gather():
    gen = PointToVoxel([1.0, 1.0, 1.0], [0, 0, 0, 10, 10, 10], 3, 3, 1)
    pts = torch.tensor([[0.5, 0.5, 0.5], [5.5, 5.5, 5.5], [1.5, 0.5, 0.5], [9.5, 9.5, 9.5], [0.6, 0.6, 0.6]])
    voxels, indices, num, pid = gen.generate_voxel_with_id(pts)
    assert indices.tolist() == [[0, 0, 0], [5, 5, 5], [0, 0, 1]] and pid.tolist() == [0, 1, 2, -1, 0]
    per_voxel = torch.tensor([[10.0], [20.0], [30.0]])
    assert gather_features_by_pc_voxel_id(per_voxel, pid, -1).flatten().tolist() == [10, 20, 30, -1, 10]


@pytest.mark.parametrize(
    "args, err, match",
    [
        (([0.1, 0.1], [0, 0, 0, 1, 1, 1], 4, 10, 5), ValueError, "coors_range_xyz"),
        (([0.1, 0.1, 0.0], [0, 0, 0, 1, 1, 1], 4, 10, 5), ValueError, "vsize"),
        (([0.1, 0.1, 0.1], [0, 0, 0, 1, 1, -1], 4, 10, 5), ValueError, "maxs"),
        (([0.1, 0.1, 0.1], [0, 0, 0, 1, 1, 1], 4, 0, 5), ValueError, "max_num_voxels"),
    ],
)
def test_bad_arguments(args, err, match):
    with pytest.raises(err, match=match):
        PointToVoxel(*args)


def test_bad_points():
    gen = PointToVoxel([0.1, 0.1, 0.1], [0, 0, 0, 1, 1, 1], 4, 10, 5)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        gen(torch.zeros(5, 3))
    with pytest.raises(TypeError, match="float32"):
        gen(torch.zeros(5, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        gen(np.zeros((5, 4), dtype=np.float32))
