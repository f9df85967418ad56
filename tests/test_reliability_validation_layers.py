"""Issue 7.1 (continued from test_reliability_validation.py): sections 9-14.

Each test asserts the exception type and that the message names the argument
(``match=``). Bad-input classes, one section each:

 1. wrong dtype                      7. duplicate coordinates
 2. wrong device                     8. NaN / Inf in features or points
 3. feats / coords length mismatch   9. empty tensors (N = 0 must *work*, end to end)
 4. coords not [N, 4]               10. channel mismatch with the layer
 5. negative batch index            11. stride mismatch (add, cat, collate, transposed conv)
 6. coordinates overflowing the     12. bad geometry / config arguments
    key packing (and generative     13. build_kernel_map's own arguments
    convs that would overflow)
                                    14. scan loaders and the CLI

Entry points: SparseTensor, SparseTensor.replace/dense/+/cat, sparse_quantize,
sparse_collate, build_kernel_map, Conv3d, BatchNorm, GroupNorm, Linear,
MaxPool3d, global pools, ToDense, set_config/use_config, the interop loaders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import torchsparse_lite as tsl
from torchsparse_lite import SparseTensor, build_kernel_map, cat, sparse_collate, sparse_quantize
from torchsparse_lite import nn as snn
from torchsparse_lite.interop import (
    from_torchsparse_state_dict,
    load_spconv_checkpoint,
    load_torchsparse_checkpoint,
    spconv_to_weight,
    weight_to_spconv,
)

COORDS = torch.tensor([[0, 1, 2, 3], [0, 2, 2, 3], [1, 0, 0, 0]], dtype=torch.int32)


def st(c: int = 3, coords: torch.Tensor = COORDS, stride: int = 1) -> SparseTensor:
    return SparseTensor(torch.randn(len(coords), c), coords, stride)


# ----------------------------------------------------------- 9. empty N = 0
def empty(c: int = 3, stride: int = 1) -> SparseTensor:
    return SparseTensor(torch.zeros(0, c, requires_grad=True), torch.zeros(0, 4, dtype=torch.int32), stride)


@pytest.mark.parametrize("builder", ["hash", "sort"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: snn.Conv3d(3, 4, 3),
        lambda: snn.Conv3d(3, 4, 2, submanifold=False),
        lambda: snn.Conv3d(3, 4, 3, 2, downsample_mode="spconv"),
        lambda: snn.Conv3d(3, 4, 3, 2, downsample_mode="minkowski"),
        lambda: snn.Conv3d(3, 4, 2, 2, transposed=True, generative=True),
        lambda: snn.Conv3d(3, 4, 3, bias=True),
    ],
    ids=["subm", "generative", "strided", "minkowski", "transposed", "bias"],
)
def test_empty_through_conv(make, builder: str) -> None:
    layer = make()
    x = empty(stride=2 if layer.transposed else 1)
    with tsl.use_config(kmap_builder=builder):
        y = layer(x)
    assert y.feats.shape == (0, 4) and y.coords.shape == (0, 4)
    y.feats.sum().backward()
    assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) == 0.0
    assert x.feats.grad is None or x.feats.grad.shape == (0, 3)


def test_empty_through_cached_transposed() -> None:
    x = empty()
    down, up = snn.Conv3d(3, 4, 2, 2), snn.Conv3d(4, 3, 2, 2, transposed=True)
    y = up(down(x))
    assert y.feats.shape == (0, 3) and y.stride == (1, 1, 1)


@pytest.mark.parametrize("train", [True, False])
def test_empty_through_norms_pools_and_net(train: bool) -> None:
    net = nn.Sequential(
        snn.Conv3d(3, 8, 3), snn.BatchNorm(8), snn.ReLU(), snn.GroupNorm(2, 8), snn.MaxPool3d(2), snn.Linear(8, 2)
    ).train(train)
    bn = net[1]
    before = bn.running_mean.clone(), bn.running_var.clone()
    y = net(empty())
    assert y.feats.shape == (0, 2) and y.stride == (2, 2, 2)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert snn.GlobalAvgPool()(y).shape == (0, 2)
    assert snn.GlobalMaxPool()(y).shape == (0, 2)
    assert snn.ToDense()(y).shape == (0, 2, 0, 0, 0)


def test_empty_quantize_and_collate() -> None:
    q = sparse_quantize(np.zeros((0, 4), np.float32), 0.1)
    assert q.coords.shape == (0, 3) and q.index.shape == (0,) and q.inverse.shape == (0,)
    coords = torch.cat([torch.zeros(0, 1, dtype=torch.int32), q.coords], 1)
    a = SparseTensor(torch.zeros(0, 2), coords)
    b = st(2, COORDS[:2])
    batch = sparse_collate([a, b])
    assert len(batch) == 2 and set(batch.coords[:, 0].tolist()) == {1}


# ----------------------------------------------------- 10. channel mismatch
def test_conv_channel_mismatch() -> None:
    with pytest.raises(ValueError, match=r"x\.feats.*in_channels"):
        snn.Conv3d(4, 2, 3)(st(3))


@pytest.mark.parametrize(
    ("layer", "name"),
    [(snn.BatchNorm(4), "BatchNorm"), (snn.GroupNorm(2, 4), "GroupNorm"), (snn.Linear(4, 2), "in_features")],
)
def test_norm_and_linear_channel_mismatch(layer, name: str) -> None:
    with pytest.raises(ValueError, match=rf"x\.feats.*{name}"):
        layer(st(3))


def test_add_channel_mismatch() -> None:
    a = st(3)
    with pytest.raises(ValueError, match="other.*channels"):
        _ = a + a.replace(torch.randn(3, 2))


def test_collate_channel_mismatch() -> None:
    with pytest.raises(ValueError, match=r"tensors\[1\].*channels"):
        sparse_collate([st(3, COORDS[:2]), st(2, COORDS[:2])])


# ------------------------------------------------------ 11. stride mismatch
def test_add_stride_mismatch() -> None:
    a, b = st(3), st(3, stride=2)
    with pytest.raises(ValueError, match="other.*stride"):
        _ = a + b


def test_cat_stride_mismatch_and_bad_items() -> None:
    with pytest.raises(ValueError, match="other.*stride"):
        cat([st(3), st(3, stride=2)])
    with pytest.raises(ValueError, match="tensors"):
        cat([])
    with pytest.raises(TypeError, match="other"):
        cat([st(3), torch.randn(3, 3)])


def test_add_coords_mismatch() -> None:
    a = st(3)
    b = SparseTensor(a.feats, a.coords.flip(0))
    with pytest.raises(ValueError, match="other.coords"):
        _ = a + b


def test_collate_stride_mismatch_and_batched_items() -> None:
    with pytest.raises(ValueError, match=r"tensors\[1\].*stride"):
        sparse_collate([st(3, COORDS[:2]), st(3, COORDS[:2], stride=2)])
    with pytest.raises(ValueError, match=r"tensors\[0\].*batch"):
        sparse_collate([st(3)])
    with pytest.raises(TypeError, match=r"tensors\[0\]"):
        sparse_collate([torch.zeros(2)])
    with pytest.raises(ValueError, match="tensors"):
        sparse_collate([])


def test_transposed_conv_on_stride_one_tensor() -> None:
    with pytest.raises(ValueError, match=r"x\.stride"):
        snn.Conv3d(3, 2, 2, 2, transposed=True)(st(3))


# ------------------------------------------------ 12. geometry and config
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 3)}, "kernel_size"),
        ({"stride": -1}, "stride"),
        ({"dilation": (1, 0, 1)}, "dilation"),
        ({"kernel_size": True}, "kernel_size"),
        ({"stride": 2, "submanifold": True}, "submanifold"),
    ],
)
def test_conv_bad_geometry(kwargs, name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        snn.Conv3d(3, 2, **kwargs)


@pytest.mark.parametrize(("a", "b"), [(0, 2), (3, -1)])
def test_conv_bad_channels(a: int, b: int) -> None:
    with pytest.raises(ValueError, match="channel"):
        snn.Conv3d(a, b)


def test_conv_channels_wrong_type() -> None:
    with pytest.raises(TypeError, match="in_channels"):
        snn.Conv3d(3.0, 2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"kmap_builder": "tree"}, "kmap_builder"), ({"backend": "cuda"}, "backend"),
     ({"downsample_mode": "max"}, "downsample_mode"), ({"chunk_rows": 0}, "chunk_rows"),
     ({"grouping": "clustered"}, "grouping")],
)
def test_config_bad_values(kwargs, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        with tsl.use_config(**kwargs):
            pass


def test_config_grouping_kinds() -> None:
    with pytest.raises(TypeError, match="grouping"):
        tsl.set_config(grouping=3)
    from torchsparse_lite.grouping import GroupingConfig, GroupingTuner  # noqa: PLC0415

    for value in ("dense", GroupingConfig("fixed", group_size=2), GroupingTuner()):
        with tsl.use_config(grouping=value) as cfg:
            assert cfg.grouping is value


def test_config_unknown_name() -> None:
    with pytest.raises(TypeError, match="kmap_bulider"):
        tsl.set_config(kmap_bulider="hash")


def test_dense_spatial_range_too_small() -> None:
    with pytest.raises(ValueError, match="spatial_range"):
        st().dense((2, 2, 2))
    with pytest.raises(ValueError, match="spatial_range"):
        st().dense((5, 5))


def test_bad_map_builder_name_on_layer() -> None:
    with pytest.raises(ValueError, match="kmap_builder"):
        snn.Conv3d(3, 2, 3, kmap_builder="tree")(st())


def test_interop_bad_inputs(tmp_path) -> None:
    with pytest.raises(ValueError, match="weight"):
        spconv_to_weight(torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="layout"):
        spconv_to_weight(torch.randn(4, 3, 3, 3, 2), layout="CKRS")
    with pytest.raises(ValueError, match="kernel_size"):
        weight_to_spconv(torch.randn(27, 2, 3), (3, 3, 2))
    with pytest.raises(TypeError, match="state_dict"):
        from_torchsparse_state_dict([1, 2])
    with pytest.raises(ValueError, match="does not exist"):
        load_torchsparse_checkpoint(snn.Conv3d(2, 3), tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="0.weight"):
        load_torchsparse_checkpoint(nn.Sequential(snn.Conv3d(2, 3)), {"0.kernel": torch.randn(27, 3, 3)})
    with pytest.raises(ValueError, match="kernel size"):
        load_spconv_checkpoint(nn.Sequential(snn.Conv3d(2, 3, (1, 3, 3))), {"0.weight": torch.randn(3, 3, 3, 1, 2)})


# ---------------------------------- 13. build_kernel_map's own arguments
# build_kernel_map is public (torchsparse_lite.build_kernel_map) and checks its
# own arguments rather than trusting the caller.


def test_build_kernel_map_float_coords() -> None:
    with pytest.raises(TypeError, match="in_coords"):
        build_kernel_map(COORDS.float(), (3, 3, 3))


def test_build_kernel_map_coords_wrong_shape() -> None:
    with pytest.raises(ValueError, match="in_coords"):
        build_kernel_map(COORDS[:, 1:], (3, 3, 3))


def test_build_kernel_map_overflowing_coords() -> None:
    with pytest.raises(ValueError, match="in_coords"):
        build_kernel_map(COORDS + 70000, (3, 3, 3))


def test_build_kernel_map_negative_coords() -> None:
    with pytest.raises(ValueError, match="in_coords.*negative"):
        build_kernel_map(COORDS - 5, (3, 3, 3))


def test_build_kernel_map_int_kernel_size() -> None:
    with pytest.raises((TypeError, ValueError), match="kernel_size"):
        build_kernel_map(COORDS, 0)


def test_build_kernel_map_bad_downsample_mode() -> None:
    with pytest.raises(ValueError, match="downsample_mode"):
        build_kernel_map(COORDS, (3, 3, 3), (2, 2, 2), mode="conv", downsample_mode="max")


def test_build_kernel_map_bad_mode_and_stride() -> None:
    with pytest.raises(ValueError, match="mode"):
        build_kernel_map(COORDS, (3, 3, 3), mode="deconv")
    with pytest.raises(ValueError, match="stride"):
        build_kernel_map(COORDS, (3, 3, 3), (2, 2, 2), mode="submanifold")


# ------------------------------------------- 14. scan loaders and the CLI
def test_scan_loaders_refuse_bad_files(tmp_path) -> None:
    kitti = pytest.importorskip("torchsparse_lite.datasets.kitti")
    nuscenes = pytest.importorskip("torchsparse_lite.datasets.nuscenes")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        kitti.load_kitti_bin(tmp_path / "missing.bin")
    bad = tmp_path / "truncated.bin"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated.bin.*multiple"):
        kitti.load_kitti_bin(bad)
    with pytest.raises(ValueError, match="truncated.bin.*multiple"):
        nuscenes.load_nuscenes_bin(bad)
    nan = tmp_path / "nan.bin"
    np.array([1.0, np.nan, 0, 0], np.float32).tofile(nan)
    with pytest.raises(ValueError, match="NaN"):
        kitti.load_kitti_bin(nan)


def test_cli_unknown_command() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    proc = subprocess.run([sys.executable, "-m", "torchsparse_lite", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no-such-command" in proc.stderr + proc.stdout
