"""torchsparse_lite.compat.minkowski: MinkowskiEngine 0.5.4's tensor and layer semantics.

Every layer is checked in float64 against the brute-force reference of
``test_compat_minkowski_reference`` (built from ME's documented offsets, not
from the engine), forward and backward; ME's coordinate-key rules (shared
strided outputs, transposed reuse, generative fallbacks) and the boundary
errors are checked directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_compat_minkowski_reference import (
    conv,
    conv_transpose,
    global_pool,
    me_offsets,
    pool,
    random_me_coords,
    strided_coords,
)

import torchsparse_lite.compat.minkowski as ME


@pytest.fixture
def x64() -> ME.SparseTensor:
    c = random_me_coords(160, -8, 8, 2, seed=5)
    f = torch.randn(c.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    return ME.SparseTensor(f.requires_grad_(), c)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad((out * g).sum(), inputs, retain_graph=True))


def _check_layer(out: ME.SparseTensor, ref: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    torch.testing.assert_close(out.F, ref)
    for a, b in zip(_grads(out.F, inputs), _grads(ref, inputs)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------- tensor
def test_sparse_tensor_quantizes_keeping_first_occurrence_order():
    c = torch.tensor([[0, 2, 0, 0], [1, -1, 0, 3], [0, 2, 0, 0], [0, 0, 0, 0], [1, -1, 0, 3]], dtype=torch.int32)
    f = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    x = ME.SparseTensor(f, c)
    assert x.C.tolist() == [[0, 2, 0, 0], [1, -1, 0, 3], [0, 0, 0, 0]]
    assert x.F.tolist() == [[0, 1], [2, 3], [6, 7]]
    assert x.unique_index.tolist() == [0, 1, 3] and x.inverse_mapping.tolist() == [0, 1, 0, 2, 1]
    avg = ME.SparseTensor(f, c, quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE)
    assert avg.F.tolist() == [[2, 3], [5, 6], [6, 7]]
    assert x.tensor_stride == [1, 1, 1] and x.D == 3 and len(x) == 3
    assert [t.tolist() for t in x.decomposed_coordinates] == [[[2, 0, 0], [0, 0, 0]], [[-1, 0, 3]]]


def test_tensor_stride_coordinates_stay_in_original_units():
    c = torch.tensor([[0, -4, 0, 8], [0, 4, 4, 0]], dtype=torch.int32)
    x = ME.SparseTensor(torch.ones(2, 1), c, tensor_stride=4)
    assert x.tensor_stride == [4, 4, 4] and x.C.tolist() == c.tolist()
    y = ME.MinkowskiConvolution(1, 1, kernel_size=2, stride=2, dimension=3)(x)
    assert y.tensor_stride == [8, 8, 8]
    assert y.C.tolist() == strided_coords(c, 8).tolist()


def test_dense_matches_me_layout():
    c = torch.tensor([[0, 0, 2, 4], [1, 2, 0, 0]], dtype=torch.int32)
    x = ME.SparseTensor(torch.tensor([[1.0], [2.0]]), c, tensor_stride=2)
    grid, min_c, ts = x.dense()
    assert grid.shape == (2, 1, 2, 2, 3) and ts.tolist() == [2, 2, 2] and min_c.tolist() == [[0, 0, 0]]
    assert grid[0, 0, 0, 1, 2] == 1 and grid[1, 0, 1, 0, 0] == 2 and grid.sum() == 3
    shifted, _, _ = x.dense(min_coordinate=torch.IntTensor([0, -2, 0]))
    assert shifted[0, 0, 0, 2, 2] == 1
    assert torch.equal(ME.MinkowskiToDenseTensor(grid.shape)(x), grid)


def test_add_same_key_and_union():
    x = ME.SparseTensor(torch.ones(2, 1), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32))
    y = ME.MinkowskiLinear(1, 1)(x)
    assert torch.equal((x + y).F, x.F + y.F) and (x + y).coordinate_map_key == x.coordinate_map_key
    z = ME.SparseTensor(
        torch.full((2, 1), 5.0),
        torch.tensor([[0, 1, 0, 0], [0, 2, 0, 0]], dtype=torch.int32),
        coordinate_manager=x.coordinate_manager,
    )
    u = x + z
    assert u.C.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0]] and u.F.flatten().tolist() == [1, 6, 5]
    before = x.F.clone()
    x += y
    assert torch.equal(x.F, before + y.F)


# ------------------------------------------------------------------------------------ convolutions
@pytest.mark.parametrize("k,s,d", [(3, 1, 1), (2, 1, 1), (3, 1, 2), (3, 2, 1), (2, 2, 1), (1, 2, 1), (3, 3, 1)])
def test_convolution_matches_reference(x64, k, s, d):
    layer = ME.MinkowskiConvolution(3, 4, kernel_size=k, stride=s, dilation=d, bias=True, dimension=3).double()
    out = layer(x64)
    out_c = x64.C if s == 1 else strided_coords(x64.C, s)
    assert out.C.tolist() == out_c.tolist() and out.tensor_stride == [s] * 3
    assert layer.kernel.shape == (k**3, 3, 4) and layer.bias.shape == (1, 4)
    ref = conv(x64.C, x64.F, layer.kernel, out_c, k, d, 1) + layer.bias
    _check_layer(out, ref, [x64.F, layer.kernel, layer.bias])


def test_kernel_size_one_stride_one_is_a_matrix(x64):
    layer = ME.MinkowskiConvolution(3, 2, kernel_size=1, bias=True, dimension=3).double()
    assert layer.kernel.shape == (3, 2)
    out = layer(x64)
    assert out.coordinate_map_key == x64.coordinate_map_key
    _check_layer(out, x64.F @ layer.kernel + layer.bias, [x64.F, layer.kernel])


def test_convolution_on_a_strided_tensor_scales_offsets(x64):
    down = ME.MinkowskiConvolution(3, 3, kernel_size=2, stride=2, dimension=3).double()(x64)
    layer = ME.MinkowskiConvolution(3, 2, kernel_size=3, stride=2, dimension=3).double()
    out = layer(down)
    assert out.tensor_stride == [4, 4, 4] and out.C.tolist() == strided_coords(down.C, 4).tolist()
    _check_layer(out, conv(down.C, down.F, layer.kernel, out.C, 3, 1, 2), [x64.F, layer.kernel])


def test_strided_convolutions_of_one_input_share_their_output():
    x = ME.SparseTensor(torch.randn(40, 2), random_me_coords(40, -6, 6, 1, seed=7))
    a = ME.MinkowskiConvolution(2, 2, kernel_size=3, stride=2, dimension=3)(x)
    b = ME.MinkowskiConvolution(2, 2, kernel_size=1, stride=2, dimension=3)(x)
    assert a.coordinate_map_key == b.coordinate_map_key and a.coordinate_manager is x.coordinate_manager
    assert torch.equal((a + b).F, a.F + b.F)


@pytest.mark.parametrize("k", [2, 3])
def test_transposed_conv_reuses_the_finer_coordinates(x64, k):
    down = ME.MinkowskiConvolution(3, 3, kernel_size=2, stride=2, dimension=3).double()(x64)
    up = ME.MinkowskiConvolutionTranspose(3, 4, kernel_size=k, stride=2, bias=True, dimension=3).double()
    assert up.kernel.shape == (k**3, 3, 4)
    out = up(down)
    assert out.coordinate_map_key == x64.coordinate_map_key and torch.equal(out.C, x64.C)
    ref = conv_transpose(down.C, down.F, up.kernel, x64.C, k, 1, 1) + up.bias
    _check_layer(out, ref, [x64.F, up.kernel])


@pytest.mark.parametrize("k", [2, 3])
def test_stride_one_transposed_conv_scatters_along_offsets(x64, k):
    # Stride 1: the target is the input's own set; output o receives input o - offset (the conv's mirror).
    up = ME.MinkowskiConvolutionTranspose(3, 2, kernel_size=k, dimension=3).double()
    out = up(x64)
    assert out.coordinate_map_key == x64.coordinate_map_key
    _check_layer(out, conv_transpose(x64.C, x64.F, up.kernel, x64.C, k, 1, 1), [x64.F, up.kernel])
    gen = ME.MinkowskiGenerativeConvolutionTranspose(3, 2, kernel_size=k, dimension=3).double()
    grown = gen(x64)
    expect = {(b, x + dx, y + dy, z + dz) for b, x, y, z in x64.C.tolist() for dx, dy, dz in me_offsets(k, 1, 1)}
    assert set(map(tuple, grown.C.tolist())) == expect
    _check_layer(grown, conv_transpose(x64.C, x64.F, gen.kernel, grown.C, k, 1, 1), [x64.F, gen.kernel])


def test_transposed_conv_without_finer_coordinates_generates_them():
    c = random_me_coords(30, -8, 8, 2, seed=8, step=2)
    x = ME.SparseTensor(torch.randn(c.shape[0], 2, dtype=torch.float64), c, tensor_stride=2)
    up = ME.MinkowskiConvolutionTranspose(2, 3, kernel_size=3, stride=2, dimension=3).double()
    out = up(x)
    expect = {(b, x_ + dx, y + dy, z + dz) for b, x_, y, z in c.tolist() for dx, dy, dz in me_offsets(3, 1, 1)}
    assert out.tensor_stride == [1, 1, 1] and set(map(tuple, out.C.tolist())) == expect
    _check_layer(out, conv_transpose(c, x.F, up.kernel, out.C, 3, 1, 1), [up.kernel])


def test_generative_transpose_always_generates(x64):
    down = ME.MinkowskiConvolution(3, 3, kernel_size=2, stride=2, dimension=3).double()(x64)
    gen = ME.MinkowskiGenerativeConvolutionTranspose(3, 2, kernel_size=2, stride=2, dimension=3).double()
    out = gen(down)
    expect = {(b, x + dx, y + dy, z + dz) for b, x, y, z in down.C.tolist() for dx, dy, dz in me_offsets(2, 1, 1)}
    assert out.coordinate_map_key != x64.coordinate_map_key and set(map(tuple, out.C.tolist())) == expect
    _check_layer(out, conv_transpose(down.C, down.F, gen.kernel, out.C, 2, 1, 1), [x64.F, gen.kernel])


@pytest.mark.parametrize("k", [2, 3])
def test_expand_coordinates_grows_stride_one_outputs(k):
    c = random_me_coords(25, -5, 5, 1, seed=9)
    x = ME.SparseTensor(torch.randn(c.shape[0], 2, dtype=torch.float64), c)
    layer = ME.MinkowskiConvolution(2, 2, kernel_size=k, expand_coordinates=True, dimension=3).double()
    out = layer(x)
    # ME's stride_region: every c + offset; the kernel map then reads o + offset.
    expect = {(b, x_ + dx, y + dy, z + dz) for b, x_, y, z in c.tolist() for dx, dy, dz in me_offsets(k, 1, 1)}
    assert set(map(tuple, out.C.tolist())) == expect
    _check_layer(out, conv(c, x.F, layer.kernel, out.C, k, 1, 1), [layer.kernel])


def test_conv_onto_given_coordinates(x64):
    down = ME.MinkowskiConvolution(3, 3, kernel_size=2, stride=2, dimension=3).double()(x64)
    layer = ME.MinkowskiConvolutionTranspose(3, 2, kernel_size=3, stride=2, dimension=3).double()
    out = layer(down, coordinates=x64)
    assert torch.equal(out.C, x64.C)
    _check_layer(out, conv_transpose(down.C, down.F, layer.kernel, x64.C, 3, 1, 1), [layer.kernel])


def test_gradcheck_strided_and_transposed():
    c = random_me_coords(14, -2, 2, 2, seed=10)
    f = torch.randn(c.shape[0], 2, dtype=torch.float64, requires_grad=True)
    x = ME.SparseTensor(f, c)
    down = ME.MinkowskiConvolution(2, 2, kernel_size=3, stride=2, dimension=3).double()
    up = ME.MinkowskiConvolutionTranspose(2, 2, kernel_size=2, stride=2, dimension=3).double()
    key, manager = x.coordinate_map_key, x.coordinate_manager

    def net(feats, w_down, w_up):
        t = ME.SparseTensor(feats, coordinate_map_key=key, coordinate_manager=manager)
        mid = torch.func.functional_call(down, {"kernel": w_down}, (t,))
        return torch.func.functional_call(up, {"kernel": w_up}, (mid,)).F

    w1 = down.kernel.detach().clone().requires_grad_()
    w2 = up.kernel.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(net, (f, w1, w2))


# ----------------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize(
    "layer_cls,mode",
    [(ME.MinkowskiAvgPooling, "avg"), (ME.MinkowskiSumPooling, "sum"), (ME.MinkowskiMaxPooling, "max")],
)
@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 3), (3, 1)])
def test_local_pooling_matches_reference(x64, layer_cls, mode, k, s):
    out = layer_cls(kernel_size=k, stride=s, dimension=3)(x64)
    out_c = x64.C if s == 1 else strided_coords(x64.C, s)
    assert out.C.tolist() == out_c.tolist()
    _check_layer(out, pool(x64.C, x64.F, out_c, k, s, 1, mode), [x64.F])


def test_pooling_transpose_sums_onto_the_finer_coordinates(x64):
    down = ME.MinkowskiSumPooling(kernel_size=2, stride=2, dimension=3)(x64)
    up = ME.MinkowskiPoolingTranspose(kernel_size=2, stride=2, dimension=3)(down)
    assert torch.equal(up.C, x64.C)
    eye = torch.eye(3, dtype=torch.float64).repeat(8, 1, 1)
    _check_layer(up, conv_transpose(down.C, down.F, eye, x64.C, 2, 1, 1), [x64.F])


@pytest.mark.parametrize(
    "layer,mode", [(ME.MinkowskiGlobalAvgPooling, "avg"), (ME.MinkowskiGlobalSumPooling, "sum"),
                   (ME.MinkowskiGlobalMaxPooling, "max")],
)  # fmt: skip
def test_global_pooling_one_row_per_sample(x64, layer, mode):
    out = layer()(x64)
    ref_c, ref_f = global_pool(x64.C, x64.F, mode)
    assert out.C.tolist() == ref_c.tolist() and out.tensor_stride == [0, 0, 0]
    _check_layer(out, ref_f, [x64.F])


def test_pointwise_layers_keep_coordinates_and_me_state_dict_keys(x64):
    bn = ME.MinkowskiBatchNorm(3).double()
    out = bn(x64)
    assert out.coordinate_map_key == x64.coordinate_map_key
    assert set(bn.state_dict()) == {f"bn.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                                          "num_batches_tracked")}  # fmt: skip
    assert set(ME.MinkowskiLinear(3, 2).state_dict()) == {"linear.weight", "linear.bias"}
    assert set(ME.MinkowskiPReLU().state_dict()) == {"module.weight"}
    assert torch.equal(ME.MinkowskiLeakyReLU(0.2)(x64).F, torch.nn.functional.leaky_relu(x64.F, 0.2))
    assert torch.equal(ME.MinkowskiFunctional.relu(x64).F, x64.F.relu())
    inorm = ME.MinkowskiInstanceNorm(3).double()
    y = inorm(x64).F
    for b in (0, 1):
        rows = x64.C[:, 0] == b
        ref = (x64.F[rows] - x64.F[rows].mean(0)) / (x64.F[rows].var(0, unbiased=False) + 1e-8).sqrt()
        torch.testing.assert_close(y[rows], ref)


def test_cat_and_sum_require_one_coordinate_set(x64):
    a, b = ME.MinkowskiLinear(3, 2).double()(x64), ME.MinkowskiLinear(3, 1).double()(x64)
    assert ME.cat(a, b).F.shape == (len(x64), 3) and torch.equal(ME.cat((a, b)).F, torch.cat([a.F, b.F], 1))
    torch.testing.assert_close(ME.sum(a, a).F, 2 * a.F)


# ------------------------------------------------------------------------------------------- utils
def test_sparse_quantize_me_signature():
    pts = np.array([[0.1, 0.2, 0.3], [1.7, 0.0, 0.0], [0.4, 0.9, 0.1], [-0.2, 0.0, 0.0]], dtype=np.float32)
    feats = np.arange(8, dtype=np.float32).reshape(4, 2)
    labels = np.array([5, 6, 7, 8])
    coords, f, lab, index, inverse = ME.utils.sparse_quantize(
        pts, feats, labels, quantization_size=1.0, return_index=True, return_inverse=True
    )
    assert coords.dtype == torch.int32 and coords.tolist() == [[0, 0, 0], [1, 0, 0], [-1, 0, 0]]
    assert index.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2]
    assert isinstance(f, np.ndarray) and f.tolist() == [[0, 1], [2, 3], [6, 7]] and lab.tolist() == [5, 6, 8]
    q = ME.utils.sparse_quantize(torch.tensor(pts), quantization_size=[0.5, 0.5, 0.5])
    assert q.tolist() == [[0, 0, 0], [3, 0, 0], [0, 1, 0], [-1, 0, 0]]
    assert ME.utils.sparse_quantize(pts, return_maps_only=True).tolist() == [0, 1, 3]


def test_batched_coordinates_and_sparse_collate():
    a, b = np.array([[1.5, 2, 3]]), torch.tensor([[4, 5, 6], [7, 8, 9]])
    bc = ME.utils.batched_coordinates([a, b])
    assert bc.dtype == torch.int32 and bc.tolist() == [[0, 1, 2, 3], [1, 4, 5, 6], [1, 7, 8, 9]]
    coords, feats, labels = ME.utils.sparse_collate([a, b], [torch.ones(1, 2), torch.zeros(2, 2)],
                                                    [torch.tensor([1]), torch.tensor([2, 3])])  # fmt: skip
    assert torch.equal(coords, bc) and feats.shape == (3, 2) and labels.tolist() == [1, 2, 3]


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("dimension,exc", [(None, TypeError), (2, NotImplementedError), (4, ValueError)])
def test_dimension_must_be_three(dimension, exc):
    with pytest.raises(exc, match="dimension"):
        ME.MinkowskiConvolution(2, 2, kernel_size=3, dimension=dimension)
    with pytest.raises(exc, match="dimension"):
        ME.MinkowskiMaxPooling(kernel_size=2, stride=2, dimension=dimension)


def test_bad_coordinates_raise_clear_errors():
    f = torch.ones(2, 1)
    with pytest.raises(TypeError, match="integer tensor"):
        ME.SparseTensor(f, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="not a multiple of tensor_stride"):
        ME.SparseTensor(f, torch.tensor([[0, 0, 0, 0], [0, 2, 1, 0]], dtype=torch.int32), tensor_stride=2)
    with pytest.raises(NotImplementedError, match="3D only"):
        ME.SparseTensor(f, torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="rows"):
        ME.SparseTensor(torch.ones(3, 1), torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="spans"):
        ME.SparseTensor(f, torch.tensor([[0, 0, 0, 0], [0, -30000, 0, 0]], dtype=torch.int32))
    with pytest.raises(NotImplementedError, match="tensor_stride"):
        ME.SparseTensor(f, torch.zeros(2, 4, dtype=torch.int32), tensor_stride=5)


def test_mismatched_managers_and_keys_raise():
    c = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    a, b = ME.SparseTensor(torch.ones(2, 1), c), ME.SparseTensor(torch.ones(2, 1), c)
    with pytest.raises(ValueError, match="same coordinate manager"):
        ME.cat(a, b)
    with pytest.raises(ValueError, match="same coordinate manager"):
        a + b
    down = ME.MinkowskiConvolution(1, 1, kernel_size=2, stride=2, dimension=3)(a)
    with pytest.raises(ValueError, match="coordinate_map_key"):
        ME.cat(a, down)
    with pytest.raises(ValueError, match="coordinate_map_key"):
        a += down


def test_unsupported_arguments_raise():
    with pytest.raises(NotImplementedError, match="HYPER_CUBE"):
        ME.KernelGenerator(3, region_type=ME.RegionType.HYPER_CROSS, dimension=3)
    with pytest.raises(NotImplementedError, match="region_offsets"):
        ME.KernelGenerator(3, region_offsets=torch.zeros(2, 3, dtype=torch.int32), dimension=3)
    with pytest.raises(NotImplementedError):
        ME.TensorField(torch.ones(1, 1), torch.zeros(1, 4))
    with pytest.raises(NotImplementedError):
        ME.MinkowskiChannelwiseConvolution(2, 3, dimension=3)
    kg = ME.KernelGenerator(kernel_size=3, stride=2, dimension=3)
    layer = ME.MinkowskiConvolution(2, 2, kernel_generator=kg, dimension=3)
    assert layer.kernel.shape == (27, 2, 2) and layer.kernel_generator.kernel_stride == [2, 2, 2]


def test_layer_input_errors():
    x = ME.SparseTensor(torch.ones(2, 3), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError, match="in_channels=2"):
        ME.MinkowskiConvolution(2, 2, kernel_size=3, dimension=3)(x)
    with pytest.raises(TypeError, match="SparseTensor"):
        ME.MinkowskiConvolution(3, 2, kernel_size=3, dimension=3)(torch.ones(2, 3))
    g = ME.MinkowskiGlobalAvgPooling()(x)
    with pytest.raises(ValueError, match="global pooling output"):
        ME.MinkowskiConvolution(3, 2, kernel_size=3, dimension=3)(g)
    with pytest.raises(ValueError, match="divisible"):
        ME.MinkowskiConvolutionTranspose(3, 2, kernel_size=2, stride=2, dimension=3)(x)
