"""Issue 7.1: every bad-input class at every public entry point gives a clear ValueError / TypeError.

Sections 1-8 are here, 9-14 in ``test_reliability_validation_layers.py``.

Each test asserts the exception type and that the message names the argument
(``match=``). Bad-input classes, one section each:

 1. wrong dtype                      7. duplicate coordinates
 2. wrong device                     8. NaN / Inf in features or points
 3. feats / coords length mismatch   9. empty tensors (N = 0 must *work*, end to end)
 4. coords not [N, 4]               10. channel mismatch with the layer
 5. negative batch index            11. stride mismatch (add, cat, collate, transposed conv)
 6. coordinates overflowing the     12. bad geometry / config arguments
    key packing (and generative     13. build_kernel_map's own arguments (xfail: missing checks
    convs that would overflow)          in kmap/, owned by the lead; see the report)
                                    14. scan loaders and the CLI

Entry points: SparseTensor, SparseTensor.replace/dense/+/cat, sparse_quantize,
sparse_collate, build_kernel_map, Conv3d, BatchNorm, GroupNorm, Linear,
MaxPool3d, global pools, ToDense, set_config/use_config, the interop loaders.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchsparse_lite import SparseTensor, build_kernel_map, sparse_collate, sparse_quantize
from torchsparse_lite import nn as snn
from torchsparse_lite.kmap import MAX_BATCH, MAX_COORD

COORDS = torch.tensor([[0, 1, 2, 3], [0, 2, 2, 3], [1, 0, 0, 0]], dtype=torch.int32)


def st(c: int = 3, coords: torch.Tensor = COORDS, stride: int = 1) -> SparseTensor:
    return SparseTensor(torch.randn(len(coords), c), coords, stride)


# ---------------------------------------------------------------- 1. dtype
def test_feats_integer_dtype() -> None:
    with pytest.raises(TypeError, match="feats"):
        SparseTensor(torch.ones(3, 2, dtype=torch.int64), COORDS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.complex64])
def test_coords_non_integer_dtype(dtype) -> None:
    with pytest.raises(TypeError, match="coords"):
        SparseTensor(torch.ones(3, 2), COORDS.to(dtype))


def test_coords_not_a_tensor() -> None:
    with pytest.raises(TypeError, match="coords"):
        SparseTensor(torch.ones(3, 2), COORDS.tolist())
    with pytest.raises(TypeError, match="feats"):
        SparseTensor(np.ones((3, 2), dtype=np.float32), COORDS)


def test_points_integer_dtype() -> None:
    with pytest.raises(TypeError, match="points"):
        sparse_quantize(np.ones((4, 3), dtype=np.int32), 0.1)
    with pytest.raises(TypeError, match="points"):
        sparse_quantize([[0.0, 1.0, 2.0]], 0.1)


def test_conv_feats_dtype_differs_from_weight() -> None:
    with pytest.raises(TypeError, match="feats"):
        snn.Conv3d(3, 2, 3)(st().to(torch.float64))


def test_layer_input_not_a_sparse_tensor() -> None:
    for layer in (snn.Conv3d(3, 2), snn.BatchNorm(3), snn.GroupNorm(1, 3), snn.ReLU(), snn.MaxPool3d(2),
                  snn.GlobalAvgPool(), snn.ToDense()):
        with pytest.raises(TypeError, match="x"):
            layer(torch.randn(3, 3))


def test_origin_float_dtype() -> None:
    with pytest.raises(TypeError, match="origin"):
        sparse_quantize(np.zeros((2, 3), np.float32), 0.1, origin=[0.5, 0, 0])


# ---------------------------------------------------------------- 2. device
def test_feats_and_coords_on_different_devices() -> None:
    feats = torch.empty(3, 2, device="meta")
    with pytest.raises(ValueError, match="feats"):
        SparseTensor(feats, COORDS)


def test_collate_mixed_dtype() -> None:
    with pytest.raises(ValueError, match=r"tensors\[1\]"):
        sparse_collate([st(coords=COORDS[:2]), st(coords=COORDS[:2]).to(torch.float64)])


# ------------------------------------------------------------ 3. lengths
def test_feats_coords_length_mismatch() -> None:
    with pytest.raises(ValueError, match="feats"):
        SparseTensor(torch.randn(2, 3), COORDS)


def test_replace_length_mismatch() -> None:
    with pytest.raises(ValueError, match="feats"):
        st().replace(torch.randn(5, 3))


def test_feats_not_2d() -> None:
    with pytest.raises(ValueError, match="feats"):
        SparseTensor(torch.randn(3), COORDS)


# ---------------------------------------------------------- 4. coords shape
@pytest.mark.parametrize("shape", [(3, 3), (3, 5), (12,), (3, 4, 1)])
def test_coords_wrong_shape(shape) -> None:
    coords = torch.zeros(shape, dtype=torch.int32)
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(torch.randn(3, 2), coords)


# ------------------------------------------------------- 5. negative batch
def test_negative_batch_index() -> None:
    bad = COORDS.clone()
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="coords.*batch"):
        SparseTensor(torch.randn(3, 2), bad)


def test_negative_spatial_coordinate() -> None:
    bad = COORDS.clone()
    bad[1, 2] = -4
    with pytest.raises(ValueError, match="coords.*negative"):
        SparseTensor(torch.randn(3, 2), bad)


# ------------------------------------------------------------ 6. overflow
@pytest.mark.parametrize(("col", "value"), [(1, MAX_COORD + 1), (3, 2**31 - 1), (0, MAX_BATCH + 1)])
def test_coordinates_overflow_packing(col: int, value: int) -> None:
    bad = COORDS.clone()
    bad[0, col] = value
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(torch.randn(3, 2), bad)


def test_max_coordinate_is_accepted() -> None:
    ok = COORDS.clone()
    ok[0, 1:] = MAX_COORD
    y = snn.Conv3d(2, 2, 3)(SparseTensor(torch.randn(3, 2), ok))
    assert len(y) == 3


def test_quantize_scene_too_large() -> None:
    pts = np.array([[0, 0, 0], [70000.0, 0, 0]], dtype=np.float64)
    with pytest.raises(ValueError, match="voxel_size"):
        sparse_quantize(pts, 1.0)


def test_quantize_points_below_origin() -> None:
    with pytest.raises(ValueError, match="origin"):
        sparse_quantize(np.zeros((2, 3), np.float32), 0.1, origin=[1, 0, 0])


@pytest.mark.parametrize(
    ("layer", "stride"),
    [(snn.Conv3d(2, 2, 3, submanifold=False), 1), (snn.Conv3d(2, 2, 2, 2, transposed=True, generative=True), 2)],
    ids=["generative", "transposed-generative"],
)
def test_generative_conv_would_overflow(layer, stride: int) -> None:
    edge = torch.tensor([[0, MAX_COORD, 5, 5]], dtype=torch.int32)
    if stride == 2:
        edge = torch.tensor([[0, MAX_COORD // 2 + 1, 5, 5]], dtype=torch.int32)
    with pytest.raises(ValueError, match="input coords"):
        layer(SparseTensor(torch.randn(1, 2), edge, stride))


def test_transposed_with_cached_map_at_the_edge_is_fine() -> None:
    edge = torch.tensor([[0, MAX_COORD, 5, 5], [0, 0, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.randn(2, 2), edge)
    y = snn.Conv3d(2, 2, 2, 2, transposed=True)(snn.Conv3d(2, 2, 2, 2)(x))
    assert torch.equal(y.coords, edge)


# ---------------------------------------------------------- 7. duplicates
def test_duplicate_coordinates_refused() -> None:
    dup = torch.cat([COORDS, COORDS[:1]])
    with pytest.raises(ValueError, match="coords.*duplicate"):
        SparseTensor(torch.randn(4, 2), dup)


@pytest.mark.parametrize("builder", ["hash", "sort"])
@pytest.mark.parametrize(
    "kernel,stride,mode",
    [(3, 1, "submanifold"), (3, 2, "conv"), (2, 2, "conv"), (3, 1, "conv"), (2, 2, "transposed")],
)
@pytest.mark.parametrize("where", ["appended", "adjacent"])
def test_duplicate_coordinates_refused_by_map_builders(builder: str, kernel: int, stride: int, mode: str,
                                                       where: str) -> None:  # fmt: skip
    # "adjacent": the copy right after its original, so the inputs stay in (non-strict) key order.
    dup = torch.cat([COORDS, COORDS[1:2]]) if where == "appended" else torch.cat([COORDS[:2], COORDS[1:]])
    with pytest.raises(ValueError, match="coords.*duplicate"):
        build_kernel_map(dup, kernel, stride, mode=mode, builder=builder)


def test_all_points_in_one_voxel_dedup() -> None:
    pts = np.random.default_rng(0).uniform(0.01, 0.09, size=(50, 3))
    q = sparse_quantize(pts, 0.1)
    assert q.coords.tolist() == [[0, 0, 0]] and q.index.tolist() == [0] and bool((q.inverse == 0).all())


# ---------------------------------------------------------------- 8. NaN / Inf
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_features(value: float) -> None:
    feats = torch.randn(3, 2)
    feats[1, 1] = value
    with pytest.raises(ValueError, match="feats.*NaN or Inf"):
        SparseTensor(feats, COORDS)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_points(value: float) -> None:
    pts = np.zeros((4, 4), np.float32)
    pts[2, 1] = value
    with pytest.raises(ValueError, match="points.*NaN or Inf"):
        sparse_quantize(pts, 0.1)


def test_non_finite_point_attribute_is_ignored() -> None:
    """Only x, y, z are voxelized; extra columns (intensity) may hold anything."""
    pts = np.zeros((4, 4), np.float32)
    pts[2, 3] = math.nan
    assert len(sparse_quantize(pts, 0.1).coords) == 1


@pytest.mark.parametrize("voxel", [0.0, -0.1, math.nan, math.inf, (0.1, 0.1), "0.1"])
def test_bad_voxel_size(voxel) -> None:
    with pytest.raises((ValueError, TypeError), match="voxel_size"):
        sparse_quantize(np.zeros((2, 3), np.float32), voxel)
