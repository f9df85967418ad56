"""Kernel shapes as first-class kernels: a Conv3d with a tap subset equals the dense conv with the other taps zero.

float64, forward and backward (features and kept-tap weights), for submanifold,
strided and transposed convs, named shapes (cross, star) and a custom subset.
"""

from __future__ import annotations

import pytest
import torch
from reference import dense_conv, random_coords

from torchsparse_lite import SparseTensor
from torchsparse_lite import nn as snn
from torchsparse_lite.kmap.geometry import kernel_taps

SHAPES = {"cross": "cross", "star": "star", "custom": (0, 5, 13, 20, 26)}
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _input(seed: int) -> SparseTensor:
    coords = random_coords(250, 9, batch=2, generator=torch.Generator().manual_seed(seed)) + torch.tensor(
        [0, 2, 2, 2], dtype=torch.int32
    )
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return SparseTensor(feats.requires_grad_(), coords)


def _full_weight(conv: snn.Conv3d) -> torch.Tensor:
    """The [27, Cin, Cout] box weight with the kept taps' rows and zeros elsewhere (differentiable)."""
    full = conv.weight.new_zeros((27, *conv.weight.shape[1:]))
    return full.index_copy(0, torch.tensor(conv.taps), conv.weight)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", ["submanifold", "conv", "transposed"])
def test_tap_subset_equals_dense_conv_with_dropped_taps_zero(mode: str, shape: str) -> None:
    x = _input(3)
    taps = SHAPES[shape]
    if mode == "transposed":
        down = snn.Conv3d(3, 3, 3, stride=2, taps=taps).double()
        x = down(x)
        x = SparseTensor(x.feats.detach().requires_grad_(), x.coords, x.stride, cache=x.cache)
        conv = snn.Conv3d(3, 4, 3, stride=2, transposed=True, taps=taps).double()
    else:
        conv = snn.Conv3d(3, 4, 3, stride=1 if mode == "submanifold" else 2, taps=taps).double()
    assert conv.weight.shape[0] == len(conv.taps) < 27
    y = conv(x)
    grad = torch.randn_like(y.feats)
    gf, gw = torch.autograd.grad(y.feats, (x.feats, conv.weight), grad)
    stride = (1, 1, 1) if mode == "submanifold" else (2, 2, 2)
    ref, _ = dense_conv(x, _full_weight(conv), (3, 3, 3), stride, (1, 1, 1), y.coords, transposed=mode == "transposed")
    rf, rw = torch.autograd.grad(ref, (x.feats, conv.weight), grad)
    torch.testing.assert_close(y.feats, ref, **TOL)
    torch.testing.assert_close(gf, rf, **TOL)
    torch.testing.assert_close(gw, rw, **TOL)
    kmap = conv.kernel_map(x)
    assert kmap.volume == len(conv.taps)
    if mode == "submanifold" and shape != "custom":  # closed under mirroring, with the centre: fast symmetric map
        assert kmap.symmetric and kmap.identity_offset == len(conv.taps) // 2


def test_named_shapes_and_bad_taps() -> None:
    assert kernel_taps(3, "cross") == (4, 10, 12, 13, 14, 16, 22)
    assert len(kernel_taps(3, "star")) == 15 and len(kernel_taps(5, "cross")) == 13
    assert kernel_taps(3, "box") is None and snn.Conv3d(2, 2, 3, taps="box").taps is None
    assert "taps=7/27" in repr(snn.Conv3d(2, 2, 3, taps="cross"))
    with pytest.raises(ValueError, match="kernel shape"):
        snn.Conv3d(2, 2, 3, taps="diamond")
    with pytest.raises(ValueError, match="odd kernel"):
        snn.Conv3d(2, 2, 2, stride=2, taps="cross")
    with pytest.raises(ValueError, match="offsets_subset"):
        snn.Conv3d(2, 2, 3, taps=(0, 27))
