"""Issue 2: modules, composition, (de)serialization, pooling/normalisation vs torch, quantize/collate/cat/add.

MaxPool3d semantics (documented in the class): inactive voxels are absent,
not zero. On non-negative features the sparse max equals ``F.max_pool3d`` of
the zero-filled dense grid at the active outputs; with negative features the
sparse max can be below the dense one (which sees the zeros).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import random_coords
from torch import nn

import torchsparse_lite as tsl
from torchsparse_lite import SparseTensor, cat, sparse_collate, sparse_quantize
from torchsparse_lite import nn as snn
from torchsparse_lite.kmap import padding, triple

TOL = {"atol": 1e-5, "rtol": 1e-5}


def make_x(n: int = 150, extent: int = 8, batch: int = 2, c: int = 3, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(n, extent, batch, g)
    return SparseTensor(torch.randn(len(coords), c, generator=g), coords)


def unet() -> nn.Sequential:
    return nn.Sequential(
        snn.Conv3d(3, 8, 3),
        snn.BatchNorm(8),
        snn.ReLU(),
        snn.Conv3d(8, 16, 2, 2),
        snn.GroupNorm(4, 16),
        snn.LeakyReLU(0.1),
        snn.Conv3d(16, 16, (1, 3, 3), bias=True),
        snn.SiLU(),
        snn.Conv3d(16, 8, 2, 2, transposed=True),
        snn.Dropout(0.0),
        snn.Linear(8, 5),
    )


def test_sequential_composition_equals_manual() -> None:
    x = make_x()
    net = unet().eval()
    y = net(x)
    h = x
    for layer in net:
        h = layer(h)
    assert torch.equal(y.feats, h.feats)
    assert torch.equal(y.coords, x.coords), "down then transposed up returns the input coordinates"
    assert y.stride == (1, 1, 1) and y.feats.shape == (len(x), 5)
    assert len(x.cache) >= 3, "maps are cached on the shared cache"


def test_state_dict_round_trip_and_torch_save() -> None:
    x = make_x()
    net = unet().eval()
    ref = net(x).feats
    other = unet().eval()
    assert not torch.equal(other(x).feats, ref)
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other(x).feats, ref, atol=0, rtol=0)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    loaded = unet().eval()
    loaded.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(loaded(x).feats, ref)
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    assert torch.equal(whole(x).feats, ref)
    keys = set(net.state_dict())
    assert "0.weight" in keys and "1.running_mean" in keys and "6.bias" in keys
    assert net.state_dict()["0.weight"].shape == (27, 3, 8)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_matches_torch(train: bool) -> None:
    x = make_x(c=6)
    ours, ref = snn.BatchNorm(6), nn.BatchNorm1d(6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    ours.train(train)
    ref.train(train)
    for _ in range(2):
        torch.testing.assert_close(ours(x).feats, ref(x.feats), **TOL)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_groupnorm_matches_torch_per_sample(groups: int) -> None:
    x = make_x(batch=3, c=6)
    ours, ref = snn.GroupNorm(groups, 6), nn.GroupNorm(groups, 6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    y = ours(x).feats
    for b in range(3):
        rows = x.coords[:, 0] == b
        expect = ref(x.feats[rows].t()[None])[0].t()
        torch.testing.assert_close(y[rows], expect, **TOL)


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation"),
    [(2, 2, 1), (3, 2, 1), (3, 1, 1), ((1, 3, 3), (1, 2, 2), 1), (3, 2, 2), (2, 1, 1)],
)
def test_maxpool_matches_dense_on_nonnegative(kernel, stride, dilation) -> None:
    x = make_x(c=4)
    x = x.replace(x.feats.abs())
    ks, sd, dl = triple(kernel, "k"), triple(stride, "s"), triple(dilation, "d")
    y = snn.MaxPool3d(ks, sd, dl)(x)
    ext = [int(v) + 8 for v in x.coords[:, 1:].amax(0)]
    px, py, pz = padding(ks, dl)
    # zero padding (not -inf) is exact here: features are >= 0 and every output window holds an input
    grid = F.pad(x.dense(ext), (pz, pz, py, py, px, px))
    dense = F.max_pool3d(grid, ks, sd, 0, dl)
    c = y.coords.long()
    torch.testing.assert_close(y.feats, dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], atol=0, rtol=0)
    assert y.stride == sd


def test_maxpool_negative_semantics_and_empty_window() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.tensor([[-2.0], [-1.0]]), coords)
    y = snn.MaxPool3d(2, 2)(x)
    assert y.feats.tolist() == [[-1.0]], "max over active inputs only (dense max_pool3d would see zeros)"
    # minkowski, kernel 1 < stride 2: output (0,0,0) from input (1,0,0) has an empty window -> 0, not -inf
    x = SparseTensor(torch.tensor([[5.0]]), torch.tensor([[0, 1, 0, 0]], dtype=torch.int32))
    y = snn.MaxPool3d(1, 2, downsample_mode="minkowski")(x)
    assert y.feats.tolist() == [[0.0]]


def test_global_pools() -> None:
    x = make_x(batch=3, c=4)
    mean, mx = snn.GlobalAvgPool()(x), snn.GlobalMaxPool()(x)
    for b in range(3):
        rows = x.coords[:, 0] == b
        torch.testing.assert_close(mean[b], x.feats[rows].mean(0), **TOL)
        assert torch.equal(mx[b], x.feats[rows].amax(0))
    # a batch with an empty sample in the middle: zeros, not NaN / -inf
    keep = x.coords[:, 0] != 1
    gap = SparseTensor(x.feats[keep], x.coords[keep])
    assert torch.equal(snn.GlobalAvgPool()(gap)[1], torch.zeros(4))
    assert torch.equal(snn.GlobalMaxPool()(gap)[1], torch.zeros(4))


def test_to_dense() -> None:
    x = make_x(c=2)
    d = snn.ToDense((10, 9, 8))(x)
    assert d.shape == (2, 2, 10, 9, 8)
    c = x.coords.long()
    assert torch.equal(d[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], x.feats)
    assert float(d.abs().sum()) == pytest.approx(float(x.feats.abs().sum()), rel=1e-5)


@pytest.mark.parametrize("voxel", [0.3, (0.2, 0.5, 1.0)])
def test_sparse_quantize_index_inverse(voxel) -> None:
    g = np.random.default_rng(0)
    pts = g.normal(size=(2000, 4)).astype(np.float32) * 3
    pts[1000:1100, :3] = pts[:100, :3]  # exact duplicates
    q = sparse_quantize(pts, voxel)
    vs = torch.as_tensor(voxel, dtype=torch.float64).expand(3)
    grid = torch.floor(torch.as_tensor(pts[:, :3], dtype=torch.float64) / vs).long()
    assert torch.equal(q.origin, grid.amin(0))
    local = grid - q.origin
    assert q.coords.dtype == torch.int32 and int(q.coords.min()) == 0
    assert torch.unique(q.coords, dim=0).shape[0] == len(q.coords), "coords are unique"
    assert torch.equal(q.coords[q.inverse].long(), local), "inverse maps every point to its voxel"
    assert torch.equal(local[q.index], q.coords.long()), "index picks a point of each voxel"
    first = torch.full((len(q.coords),), len(pts), dtype=torch.long).scatter_reduce(
        0, q.inverse, torch.arange(len(pts)), "amin"
    )
    assert torch.equal(q.index, first), "index is the first point of each voxel (deterministic)"
    # given origin
    q2 = sparse_quantize(pts, voxel, origin=(q.origin - 2).tolist())
    assert torch.equal(q2.coords.long(), q.coords.long() + 2)


def test_sparse_collate_and_cat_and_add() -> None:
    a, b = make_x(batch=1, seed=1), make_x(n=90, batch=1, seed=2)
    batch = sparse_collate([a, b])
    assert batch.batch_size == 2 and len(batch) == len(a) + len(b)
    assert torch.equal(batch.feats, torch.cat([a.feats, b.feats]))
    assert torch.equal(batch.coords[: len(a), 1:], a.coords[:, 1:])
    assert set(batch.coords[:, 0].tolist()) == {0, 1}
    y = snn.Conv3d(3, 2, 3)(batch)
    z = snn.ReLU()(y)
    both = cat([y, z])
    assert both.feats.shape == (len(batch), 4)
    assert torch.equal(both.feats[:, 2:], z.feats)
    assert torch.equal((y + z).feats, y.feats + z.feats)
    with pytest.raises(ValueError, match="coords"):
        _ = a + b
    with pytest.raises(ValueError, match="coords"):
        cat([a, b])
    down = snn.Conv3d(2, 2, 1, 1)(y)
    assert torch.equal((y + down).coords, y.coords)


def test_config_builders_give_same_outputs() -> None:
    x = make_x()
    net = unet().eval()
    outs = []
    for builder in ("hash", "sort"):
        with tsl.use_config(kmap_builder=builder):
            x2 = SparseTensor(x.feats, x.coords)  # fresh cache
            outs.append(net(x2).feats)
    assert torch.equal(outs[0], outs[1])


def test_cache_keyword_and_its_deprecated_name() -> None:
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 2, 2]], dtype=torch.int32)
    x = SparseTensor(torch.randn(2, 3), coords)
    y = SparseTensor(torch.randn(2, 3), coords, cache=x.cache)
    assert y.cache is x.cache
    with pytest.warns(DeprecationWarning, match="cache="):
        z = SparseTensor(torch.randn(2, 3), coords, caches=x.cache)
    with pytest.warns(DeprecationWarning, match=r"\.cache"):
        assert z.caches is x.cache
    with pytest.raises(ValueError, match="cache= only"):
        SparseTensor(torch.randn(2, 3), coords, cache=x.cache, caches=x.cache)
