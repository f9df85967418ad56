"""Issue 11: ``torchsparse_lite.compat.spconv``'s SparseConvTensor, install(), tables and sparse_add.

Compared with the real spconv 2.3.8 (CPU, one thread) where it runs; bad
input must raise clear errors where spconv asserts or silently aliases.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch import nn

import torchsparse_lite.compat.spconv as cp
from torchsparse_lite.compat.spconv import functional as cpf

HAS_SPCONV = importlib.util.find_spec("spconv") is not None
needs_spconv = pytest.mark.skipif(not HAS_SPCONV, reason="spconv is not installed")


def scan(n: int = 300, extent: int = 9, batch: int = 2, ndim: int = 3, channels: int = 3, seed: int = 0):
    """(features [N, C], shuffled unique int32 indices [N, ndim + 1], spatial shape)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, batch, (n, 1), generator=g)
    a = torch.randint(0, extent, (n, ndim), generator=g)
    idx = torch.unique(torch.cat([b, a], 1), dim=0).to(torch.int32)
    idx = idx[torch.randperm(len(idx), generator=g)].contiguous()
    return torch.randn(len(idx), channels, generator=g), idx, [extent + i for i in range(ndim)]


# ---------------------------------------------------------------- the tensor
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_dense_layout_and_from_dense(ndim):
    f, idx, shape = scan(ndim=ndim)
    x = cp.SparseConvTensor(f, idx, shape, 2)
    d = x.dense()
    assert list(d.shape) == [2, 3, *shape]
    i = idx.long()
    assert torch.equal(d[(i[:, 0], slice(None), *i[:, 1:].t())], f)
    assert d.abs().sum() == pytest.approx(f.abs().sum().item(), rel=1e-5)
    assert torch.equal(x.dense(channels_first=False), d.movedim(1, -1))
    back = cp.SparseConvTensor.from_dense(x.dense(channels_first=False))
    assert back.spatial_shape == shape and back.batch_size == 2
    assert torch.equal(back.dense(), d)
    assert x.spatial_size == int(torch.tensor(shape).prod())


@needs_spconv
def test_tensor_matches_spconv():
    import spconv.pytorch as sp  # noqa: PLC0415 - optional peer, imported only when installed

    f, idx, shape = scan()
    ours, theirs = cp.SparseConvTensor(f, idx, shape, 2), sp.SparseConvTensor(f, idx, shape, 2)
    assert torch.equal(ours.dense(), theirs.dense())
    dense = theirs.dense(channels_first=False)
    a, b = cp.SparseConvTensor.from_dense(dense), sp.SparseConvTensor.from_dense(dense)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.features, b.features)
    assert a.spatial_shape == list(b.spatial_shape) and ours.spatial_size == theirs.spatial_size


def test_replace_feature_shadow_copy_and_add():
    f, idx, shape = scan()
    x = cp.SparseConvTensor(f, idx, shape, 2)
    y = x.replace_feature(f * 2)
    assert y is not x and y.indices is x.indices and y.indice_dict is x.indice_dict
    assert y.spatial_shape == shape and y.batch_size == 2 and y._cache is x._cache
    s = x.shadow_copy()
    assert s is not x and s.features is x.features and s.indice_dict is x.indice_dict
    assert torch.equal((x + y).features, f * 3) and torch.equal((x + f).features, f * 2)
    z = x
    z += y
    assert torch.equal(z.features, f * 3) and torch.equal(x.features, f)
    assert torch.equal(x.minus().features, -f)
    with pytest.raises(ValueError, match="replace_feature"):
        x.features = f
    with pytest.raises(ValueError, match="one row per index"):
        x.replace_feature(f[:-1])
    with pytest.raises(ValueError, match="indices differ"):
        x + cp.SparseConvTensor(f, idx.flip(0).contiguous(), shape, 2)


def test_select_by_index_drops_maps():
    f, idx, shape = scan()
    x = cp.SubMConv3d(3, 4, 3, indice_key="k")(cp.SparseConvTensor(f, idx, shape, 2))
    keep = torch.arange(0, len(idx), 2)
    s = x.select_by_index(keep)
    assert torch.equal(s.indices, idx[keep]) and torch.equal(s.features, x.features[keep])
    assert s.indice_dict == {} and "k" in x.indice_dict and s._cache is not x._cache
    assert cp.SubMConv3d(4, 4, 3, indice_key="k")(s).features.shape == (len(keep), 4)


def test_rebuilt_tensor_keeps_indice_dict():
    """``SparseConvTensor(..., indice_dict=y.indice_dict)`` keeps inverse convs working, as in spconv."""
    f, idx, shape = scan()
    y = cp.SparseConv3d(3, 5, 3, 2, 1, indice_key="down")(cp.SparseConvTensor(f, idx, shape, 2))
    rebuilt = cp.SparseConvTensor(y.features.clone(), y.indices.clone(), y.spatial_shape, 2, indice_dict=y.indice_dict)
    z = cp.SparseInverseConv3d(5, 2, 3, "down")(rebuilt)
    assert torch.equal(z.indices, idx) and z.spatial_shape == shape
    data = rebuilt.find_indice_pair("down")
    assert data.indices is idx and torch.equal(data.out_indices, y.indices) and not data.is_subm
    assert data.spatial_shape == shape and data.out_spatial_shape == y.spatial_shape
    assert rebuilt.find_indice_pair(None) is None and rebuilt.find_indice_pair("nope") is None
    with pytest.raises(TypeError, match="indice_dict"):
        cp.SparseConvTensor(f, idx, shape, 2, indice_dict={"k": object()})


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda f, i: (f, i.float(), [9, 10, 11], 2), TypeError, "integer"),
        (lambda f, i: (f.long(), i, [9, 10, 11], 2), TypeError, "floating"),
        (lambda f, i: (f, i[:, :3], [9, 10, 11], 2), ValueError, "spatial_shape"),
        (lambda f, i: (f[:-1], i, [9, 10, 11], 2), ValueError, "rows"),
        (lambda f, i: (f, i, [9, 10, 11], 1), ValueError, "batch_size"),
        (lambda f, i: (f, i, [9, 10, 11], 0), ValueError, "batch_size"),
        (lambda f, i: (f, i, [8, 10, 11], 2), ValueError, r"indices\[:, 1\]"),
        (lambda f, i: (f, i, [9, 10, 5], 2), ValueError, r"indices\[:, 3\]"),
        (lambda f, i: (f, torch.cat([i[:-1], i[:1]]), [9, 10, 11], 2), ValueError, "duplicate"),
        (lambda f, i: (f[:, None], i, [9, 10, 11], 2), ValueError, r"\[N, C\]"),
        (lambda f, i: (f, torch.cat([i, i[:, :1]], 1), [9] * 4, 2), NotImplementedError, "4-D"),
    ],
)
def test_bad_tensor_input(make, err, match):
    f, idx, _ = scan(extent=8)
    idx = idx.clone()
    idx[0, 1:] = torch.tensor([8, 9, 10], dtype=torch.int32)  # reaches the last site of a [9, 10, 11] grid
    idx = torch.unique(idx, dim=0)
    f = f[: len(idx)]
    with pytest.raises(err, match=match):
        cp.SparseConvTensor(*make(f, idx))


def test_int64_indices_are_converted():
    f, idx, shape = scan()
    x = cp.SparseConvTensor(f, idx.long(), shape, 2)
    assert x.indices.dtype == torch.int32 and torch.equal(x.indices, idx)


# -------------------------------------------------------- modules / tables
def test_sparse_sequential_forms_and_feature_modules():
    f, idx, shape = scan()
    x = cp.SparseConvTensor(f, idx, shape, 2)
    conv = cp.SubMConv3d(3, 4, 3, bias=False)
    torch.manual_seed(0)
    a = cp.SparseSequential(conv, nn.BatchNorm1d(4), nn.ReLU()).eval()
    b = cp.SparseSequential(**{"conv": conv, "bn": a[1], "relu": nn.ReLU()}).eval()
    from collections import OrderedDict  # noqa: PLC0415 - only this test builds one

    c = cp.SparseSequential(OrderedDict([("conv", conv), ("bn", a[1]), ("relu", nn.ReLU())])).eval()
    assert [n for n, _ in c.named_children()] == ["conv", "bn", "relu"] and len(a) == 3 and a[-1] is a[2]
    ys = [m(x) for m in (a, b, c)]
    ref = torch.relu(a[1](conv(x).features))
    assert all(torch.equal(y.features, ref) for y in ys)
    assert isinstance(cp.SparseSequential(cp.ToDense())(x), torch.Tensor)
    for wrap in (cp.SparseReLU(), cp.SparseIdentity(), cp.SparseBatchNorm(3).eval()):
        assert torch.allclose(cp.SparseSequential(wrap)(x).features, wrap(f))
    empty = cp.SparseConvTensor(f[:0], idx[:0], shape, 2)
    assert cp.SparseSequential(nn.Linear(3, 7))(empty).features.shape == (0, 3)  # skipped, as in spconv
    with pytest.raises(ValueError, match="exists"):
        cp.SparseSequential(nn.ReLU(), **{"0": nn.ReLU()})


def test_tables_and_sparse_add():
    f, idx, shape = scan()
    x = cp.SparseConvTensor(f, idx, shape, 2)
    y = x.replace_feature(f + 1)
    assert torch.equal(cp.JoinTable()([x, y]).features, torch.cat([f, f + 1], 1))
    assert torch.equal(cp.AddTable()([x, y]).features, f + (f + 1))
    outs = cp.ConcatTable().add(cp.SparseIdentity()).add(cp.SparseReLU())(x)
    assert len(outs) == 2 and torch.equal(outs[1].features, torch.relu(f))
    half = x.select_by_index(torch.arange(0, len(idx), 2))
    same = cpf.sparse_add(x, half)  # union == x's indices: x's rows, dict and maps kept
    assert same.indices is x.indices and same._cache is x._cache
    assert torch.allclose(same.dense(), x.dense() + half.dense())
    other = cp.SparseConvTensor(f, idx, [v + 1 for v in shape], 2)
    with pytest.raises(ValueError, match="spatial_shape"):
        cpf.sparse_add(x, other)
    g, idx2, _ = scan(seed=1)
    z = cp.SparseConvTensor(g, idx2, shape, 2)
    s = cp.AddTableMisaligned()([x, z])
    assert torch.allclose(s.dense(), x.dense() + z.dense()) and s.indice_dict == {}
    with pytest.raises(ValueError, match="indices differ"):
        cp.AddTable()([x, z])


@needs_spconv
def test_sparse_add_matches_spconv():
    import spconv.pytorch as sp  # noqa: PLC0415 - optional peer

    f, idx, shape = scan()
    g, idx2, _ = scan(seed=1)
    ours = cpf.sparse_add(cp.SparseConvTensor(f, idx, shape, 2), cp.SparseConvTensor(g, idx2, shape, 2))
    theirs = sp.functional.sparse_add(sp.SparseConvTensor(f, idx, shape, 2), sp.SparseConvTensor(g, idx2, shape, 2))
    assert torch.equal(ours.indices, theirs.indices)  # both sorted by (batch, a0, a1, a2)
    assert torch.allclose(ours.features, theirs.features, atol=1e-6)


# ------------------------------------------------------------------ install
def test_install_registers_spconv_names_and_restores():
    before = {k: v for k, v in sys.modules.items() if k == "spconv" or k.startswith("spconv.")}
    handle = cp.install()
    try:
        assert cp.installed() and handle.module is cp and handle.active
        with pytest.raises(RuntimeError, match="already installed"):
            cp.install()
        import spconv  # noqa: PLC0415 - resolves through sys.modules while installed
        import spconv.pytorch as spconv_pt  # noqa: PLC0415
        from spconv.core import ConvAlgo  # noqa: PLC0415
        from spconv.pytorch import SparseConvTensor, SubMConv3d  # noqa: PLC0415
        from spconv.pytorch.conv import SparseConvolution  # noqa: PLC0415
        from spconv.pytorch.core import SparseConvTensor as CoreTensor  # noqa: PLC0415
        from spconv.pytorch.modules import SparseModule  # noqa: PLC0415
        from spconv.pytorch.utils import PointToVoxel  # noqa: PLC0415

        assert spconv_pt is cp and spconv.pytorch is cp and spconv.__version__.startswith("2.")
        assert SparseConvTensor is cp.SparseConvTensor is CoreTensor and SubMConv3d is cp.SubMConv3d
        assert SparseConvolution is cp.SparseConvolution and SparseModule is cp.SparseModule
        assert PointToVoxel is cp.utils.PointToVoxel and ConvAlgo is cp.ConvAlgo
        assert spconv_pt.functional is cp.functional
        f, idx, shape = scan()
        y = spconv_pt.SparseSequential(SubMConv3d(3, 4, 3, algo=ConvAlgo.Native))(SparseConvTensor(f, idx, shape, 2))
        assert isinstance(y, cp.SparseConvTensor)
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("spconv.pytorch.ops")
    finally:
        cp.uninstall()
    after = {k: v for k, v in sys.modules.items() if k == "spconv" or k.startswith("spconv.")}
    assert after == before and not cp.installed() and not handle.active
    cp.uninstall()  # a second uninstall is a no-op
    with cp.install() as scoped:
        assert importlib.import_module("spconv.pytorch") is cp and scoped.active
    assert not cp.installed() and {k: v for k, v in sys.modules.items() if k.split(".")[0] == "spconv"} == before
    if HAS_SPCONV:
        import spconv.pytorch  # noqa: PLC0415

        assert spconv.pytorch is not cp and spconv.pytorch.SparseConvTensor is not cp.SparseConvTensor
