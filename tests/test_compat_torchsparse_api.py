"""``torchsparse_lite.compat.torchsparse``: install(), mode switches, SparseTensor API, utils and bad input."""

from __future__ import annotations

import contextvars
import sys
import types

import numpy as np
import pytest
import torch
from reference import random_coords

import torchsparse_lite
import torchsparse_lite.compat.torchsparse as ts
from torchsparse_lite.compat.torchsparse import nn as spnn
from torchsparse_lite.compat.torchsparse.nn import functional as F
from torchsparse_lite.compat.torchsparse.utils.collate import sparse_collate, sparse_collate_fn
from torchsparse_lite.compat.torchsparse.utils.quantize import sparse_quantize
from torchsparse_lite.config import get_config


def isolated(fn):
    return contextvars.copy_context().run(fn)


def tensor(n: int = 40, extent: int = 6, batch: int = 2, channels: int = 3, **kwargs) -> ts.SparseTensor:
    coords = random_coords(n, extent, batch, torch.Generator().manual_seed(1))
    return ts.SparseTensor(torch.randn(len(coords), channels), coords, **kwargs)


# ------------------------------------------------------------------ install
MODEL_CODE = """
import torch.nn as nn
import torchsparse
import torchsparse.nn as spnn
from torchsparse.nn import functional as F
from torchsparse.utils.quantize import sparse_quantize
from torchsparse.utils.collate import sparse_collate_fn

F.set_conv_mode(1)
net = nn.Sequential(spnn.Conv3d(4, 8, 3), spnn.BatchNorm(8), spnn.ReLU(True), spnn.Conv3d(8, 8, 2, stride=2),
                    spnn.Conv3d(8, 4, 2, stride=2, transposed=True))
pts = np.random.default_rng(0).random((500, 4)) * 4
samples = []
for k in range(2):
    coords, index = sparse_quantize(pts[:, :3] + k, 0.25, return_index=True)
    coords -= coords.min(0)
    samples.append({"input": torchsparse.SparseTensor(torch.tensor(pts[index], dtype=torch.float), coords)})
batch = sparse_collate_fn(samples)["input"]
out = net(batch)
"""


def test_install_runs_torchsparse_code_and_uninstall_restores() -> None:
    before = {name: sys.modules.get(name) for name in ("torchsparse", "torchsparse.nn", "torchsparse.nn.functional")}
    with ts.install():
        import torchsparse  # noqa: PLC0415 - resolved by install()
        import torchsparse.nn.functional  # noqa: PLC0415

        assert torchsparse is ts and torchsparse.nn.functional is F and torchsparse.__version__ == "2.1.0"
        scope: dict = {"np": np, "torch": torch}
        isolated(lambda: exec(MODEL_CODE, scope))
        assert isinstance(scope["out"], ts.SparseTensor) and torch.equal(scope["out"].coords, scope["batch"].coords)
        assert scope["batch"].coords[:, 0].unique().tolist() == [0, 1]
        with pytest.raises(RuntimeError, match="already installed"):
            ts.install()
    assert {name: sys.modules.get(name) for name in before} == before
    assert F.get_conv_mode() == F.ConvMode.mode0  # the script's switch stayed in its context


def test_install_restores_a_previous_module() -> None:
    fake = types.ModuleType("torchsparse")
    sys.modules["torchsparse"] = fake
    try:
        handle = ts.install()
        assert sys.modules["torchsparse"] is ts
        ts.uninstall()
        assert sys.modules["torchsparse"] is fake and "torchsparse.utils.quantize" not in sys.modules
        handle.uninstall()  # idempotent
        assert sys.modules["torchsparse"] is fake
    finally:
        sys.modules.pop("torchsparse", None)


# -------------------------------------------------------------------- modes
def test_modes_map_onto_the_engine_config_without_leaking() -> None:
    def body():
        F.set_downsample_mode("minkowski")
        assert get_config().downsample_mode == "minkowski" and F.get_downsample_mode() == "minkowski"
        F.set_kmap_mode("hashmap")
        assert F.get_kmap_mode() == "hashmap"
        F.set_conv_mode(F.ConvMode.mode2)
        assert F.get_conv_mode() == F.ConvMode.mode2

    isolated(body)
    assert get_config().downsample_mode == "spconv" and F.get_kmap_mode() == "hashmap_on_the_fly"


def test_unknown_modes_and_config_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="downsample_mode"):
        F.set_downsample_mode("voxel")
    with pytest.raises(ValueError, match="kmap_mode"):
        F.set_kmap_mode("grid")
    with pytest.raises(ValueError, match="conv_mode"):
        F.set_conv_mode(3)
    with pytest.raises(TypeError, match="conv_mode"):
        F.set_conv_mode("0")
    with pytest.raises(ValueError, match="unknown keys"):
        spnn.Conv3d(2, 2, config={"kmap_mod": "hashmap"})
    with pytest.raises(ValueError, match="kmap_mode"):
        F.set_global_conv_config({"kmap_mode": "grid"})
    with pytest.raises(TypeError, match="dataflow"):
        spnn.Conv3d(2, 2, config={"dataflow": "implicit"})


def test_conv_configs_pick_the_mode() -> None:
    cfg = F.get_default_conv_config(F.ConvMode.mode2)
    assert cfg.split_mask_num == 3 and cfg.ifsort and cfg.dataflow == F.Dataflow.ImplicitGEMM
    cfg.kmap_mode = "hashmap"
    assert F.get_default_conv_config().kmap_mode == "hashmap_on_the_fly"  # a fresh copy each time

    def x():  # a fresh tensor (fresh caches) for every conv: TorchSparse reuses a cached map by kernel and stride
        return ts.SparseTensor(torch.ones(2, 1), torch.tensor([[0, 4, 0, 0], [0, 1, 1, 1]], dtype=torch.int32))

    # hashmap mode with stride == kernel keeps the even maximum coordinate; the default drops it
    assert len(spnn.Conv3d(1, 1, 2, 2, config=cfg)(x()).coords) == 2
    assert len(spnn.Conv3d(1, 1, 2, 2)(x()).coords) == 1
    shared = x()
    spnn.Conv3d(1, 1, 2, 2, config=cfg)(shared)
    assert len(spnn.Conv3d(1, 1, 2, 2)(shared).coords) == 2  # the cached map of the same key, as in TorchSparse

    def body():
        F.set_global_conv_config({"kmap_mode": "hashmap"})
        assert F.get_global_conv_config() == {"kmap_mode": "hashmap"}
        assert len(spnn.Conv3d(1, 1, 2, 2)(x()).coords) == 2
        assert len(spnn.Conv3d(1, 1, 2, 2, config={"kmap_mode": "hashmap_on_the_fly"})(x()).coords) == 1
        F.clear_global_conv_config()
        assert F.get_global_conv_config() is None

    isolated(body)


# ------------------------------------------------------------- SparseTensor
def test_sparse_tensor_fields_and_dense() -> None:
    x = tensor(spatial_range=(2, 6, 6, 6), stride=2)
    assert x.F is x.feats and x.C is x.coords and x.s == (2, 2, 2) and x.coords.dtype == torch.int32
    d = x.dense()
    assert d.shape == (2, 6, 6, 6, 3)
    c = x.coords.long()
    assert torch.equal(d[c[:, 0], c[:, 1], c[:, 2], c[:, 3]], x.feats)
    torch.testing.assert_close(d.abs().sum(), x.feats.abs().sum())
    with pytest.raises(ValueError, match="spatial_range"):
        tensor().dense()
    assert x.to("cpu") is x and x.cpu() is x and x.half().feats.dtype == torch.float16
    assert isinstance(x.to_native(), torchsparse_lite.SparseTensor) and x.to_native().spatial_range == (6, 6, 6)


def test_add_and_cat_share_caches_and_check_coords() -> None:
    x = tensor()
    y = spnn.ReLU()(x)
    z = x + y
    assert z._caches is x._caches and torch.equal(z.feats, x.feats + x.feats.relu())
    assert ts.cat([x, y]).feats.shape == (len(x.coords), 6)
    other = tensor(n=30)
    with pytest.raises(ValueError, match="different coords"):
        x + other
    with pytest.raises(ValueError, match="different coords"):
        ts.cat([x, other])
    with pytest.raises(ValueError, match="non-empty"):
        ts.cat([])


def test_numpy_and_single_sample_inputs() -> None:
    coords = np.array([[0, 1, 2], [3, 1, 0]], dtype=np.int64)
    x = ts.SparseTensor(np.ones((2, 2), dtype=np.float32), coords)
    assert x.coords.shape == (2, 3) and x.coords.dtype == torch.int32
    labels = ts.SparseTensor(np.array([3, 4]), coords)  # TorchSparse pipelines carry labels this way
    assert labels.F.tolist() == [3, 4]
    with pytest.raises(ValueError, match="collate"):
        spnn.Conv3d(2, 2)(x)


def test_coordinates_are_in_stride_units() -> None:
    # TorchSparse 2.1: a stride-2 tensor's coordinates are its own (halved) grid; odd values are valid
    x = ts.SparseTensor(torch.ones(2, 1), torch.tensor([[0, 3, 1, 1], [0, 2, 0, 0]]), stride=2)
    y = spnn.Conv3d(1, 1, 2, stride=2)(x)
    assert y.stride == (4, 4, 4) and y.coords.tolist() == [[0, 1, 0, 0]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"coords": torch.zeros(2, 4)}, TypeError, "integer"),
        ({"coords": torch.zeros(2, 5, dtype=torch.int32)}, ValueError, r"\[N, 4\]"),
        ({"coords": torch.tensor([[0, -1, 0, 0], [0, 1, 1, 1]])}, ValueError, "negative"),
        ({"coords": torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]])}, ValueError, "duplicate"),
        ({"coords": torch.tensor([[2, 1, 1, 1], [0, 1, 2, 1]]), "spatial_range": (2, 4, 4, 4)}, ValueError, "batch"),
        ({"coords": torch.tensor([[0, 1, 1, 4], [0, 1, 2, 1]]), "spatial_range": (1, 4, 4, 4)}, ValueError, "outside"),
        ({"coords": torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1]]), "spatial_range": (4, 4, 4)}, ValueError, "4 positive"),
        ({"coords": [[0, 1, 1, 1]]}, TypeError, "coords"),
        ({"feats": torch.ones(3, 2)}, ValueError, "rows"),
    ],
)
def test_bad_tensors_are_refused(kwargs, error, match) -> None:
    args = {"feats": torch.ones(2, 2), "coords": torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1]])} | kwargs
    with pytest.raises(error, match=match):
        ts.SparseTensor(**args)


def test_bad_layers_and_inputs_are_refused() -> None:
    x = tensor(spatial_range=(2, 6, 6, 6))
    with pytest.raises(ValueError, match=r"expects \[N, 4\]"):
        spnn.Conv3d(4, 2)(x)
    with pytest.raises(TypeError, match="floating"):
        spnn.Conv3d(3, 2)(ts.SparseTensor(torch.ones(len(x.coords), 3, dtype=torch.int64), x.coords))
    with pytest.raises(TypeError, match="SparseTensor"):
        spnn.Conv3d(3, 2)(x.to_native())
    with pytest.raises(NotImplementedError, match="dilation"):
        spnn.Conv3d(3, 2, dilation=2)
    with pytest.raises(ValueError, match="transposed=True"):
        spnn.Conv3d(3, 2, generative=True)
    with pytest.raises(ValueError, match="in_channels"):
        spnn.Conv3d(0, 2)
    with pytest.raises(NotImplementedError, match="even submanifold"):
        spnn.Conv3d(3, 2, 2)(x)
    for bev in (spnn.ToBEVConvolution, spnn.ToDenseBEVConvolution, spnn.ToBEVHeightCompression, spnn.ToBEVReduction):
        with pytest.raises(NotImplementedError, match="ToBEV"):
            bev(3, 2, 4)
    with pytest.raises(NotImplementedError, match="negative"):
        ts.tensor.set_allow_negative_coordinates(True)
    ts.tensor.set_allow_negative_coordinates(False)
    assert ts.tensor.get_allow_negative_coordinates() is False


def test_module_padding_rule() -> None:
    assert spnn.Conv3d(2, 2, 3).padding == (1, 1, 1)  # odd kernel, stride 1: forced (k-1)//2
    assert spnn.Conv3d(2, 2, 3, stride=2).padding == (0, 0, 0)  # strided: the padding argument (default 0)
    assert spnn.Conv3d(2, 2, (3, 3, 2), stride=(1, 2, 1), padding=2).padding == (1, 2, 2)


# -------------------------------------------------------------- norms, pools
def test_norms_activations_and_pools() -> None:
    x = tensor(n=60, channels=4)
    gn = spnn.GroupNorm(2, 4)
    out = gn(x)
    for b in (0, 1):
        rows = x.coords[:, 0] == b
        want = torch.nn.functional.group_norm(x.feats[rows].t()[None], 2, gn.weight, gn.bias, gn.eps)[0].t()
        torch.testing.assert_close(out.feats[rows], want)
    assert torch.equal(spnn.LeakyReLU(0.1)(x).feats, torch.nn.functional.leaky_relu(x.feats, 0.1))
    avg, mx = spnn.GlobalAvgPool()(x), spnn.GlobalMaxPool()(x)
    for b in (0, 1):
        rows = x.coords[:, 0] == b
        torch.testing.assert_close(avg[b], x.feats[rows].mean(0))
        torch.testing.assert_close(mx[b], x.feats[rows].amax(0))
    bn = spnn.BatchNorm(4).eval()
    torch.testing.assert_close(bn(x).feats, torch.nn.BatchNorm1d(4).eval()(x.feats))


# ------------------------------------------------------------------- utils
def test_sparse_quantize() -> None:
    pts = np.array([[0.1, 0.2, 0.3], [0.15, 0.22, 0.31], [-0.6, 1.2, 0.0], [0.9, 0.0, 0.0]])
    coords, index, inverse = sparse_quantize(pts, 0.5, return_index=True, return_inverse=True)
    assert coords.dtype == np.int32 and coords.tolist() == [[-2, 2, 0], [0, 0, 0], [1, 0, 0]]  # floor, not shifted
    assert index.tolist() == [2, 0, 3] and inverse.tolist() == [1, 1, 0, 2]
    assert np.array_equal(coords[inverse], np.floor(pts / 0.5).astype(np.int32))
    only = sparse_quantize(torch.tensor(pts), (0.5, 0.5, 1.0))
    assert isinstance(only, np.ndarray) and only.shape == (3, 3)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        sparse_quantize(pts[:, :2], 0.5)
    with pytest.raises(ValueError, match="voxel_size"):
        sparse_quantize(pts, (0.5, 0.5))
    with pytest.raises(ValueError, match="voxel_size"):
        sparse_quantize(pts, 0.0)


def test_sparse_collate() -> None:
    a = ts.SparseTensor(torch.ones(2, 1), torch.tensor([[0, 0, 0], [1, 0, 0]]))
    b = ts.SparseTensor(torch.zeros(1, 1), torch.tensor([[0, 0, 0]]))
    batch = sparse_collate_fn([{"x": a, "y": np.ones(2), "m": {"z": torch.ones(3)}, "n": "s0"},
                               {"x": b, "y": np.zeros(2), "m": {"z": torch.zeros(3)}, "n": "s1"}])  # fmt: skip
    assert batch["x"].coords.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]
    assert batch["y"].shape == (2, 2) and batch["m"]["z"].shape == (2, 3) and batch["n"] == ["s0", "s1"]
    assert sparse_collate_fn([1, 2]) == [1, 2]
    with pytest.raises(ValueError, match="stride"):
        sparse_collate([a, ts.SparseTensor(torch.ones(1, 1), torch.tensor([[0, 0, 0]]), stride=2)])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        sparse_collate([batch["x"]])
    with pytest.raises(TypeError, match="SparseTensor"):
        sparse_collate([a, "b"])
