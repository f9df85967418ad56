"""TorchSparse 2.1 ``Conv3d`` through ``torchsparse_lite.compat.torchsparse`` vs dense float64 references.

Every case states TorchSparse's tap offsets explicitly (``start``: offsets run
``-start .. k-1-start`` per axis), as read in TorchSparse 2.1's source:
submanifold odd volume centred, submanifold even volume ``0 .. k-1``
(``subm_hashmap_kmap_stage2_even_kernel``), strided ``u - padding`` with the
module padding forced to ``(k-1)//2`` on odd, stride-1 axes
(``downsample_grid_kmap_stage1_specialized_fast`` + ``nn/modules/conv.py``).
Output coordinates are checked in TorchSparse's units (batch first, divided
by the stride), forward values and gradients against ``F.conv3d`` /
``F.conv_transpose3d`` with TorchSparse's offset -> weight assignment.
"""

from __future__ import annotations

import contextvars

import pytest
import torch
from reference import random_coords
from test_compat_torchsparse_reference import (
    dense_kernel,
    densify,
    expected_outputs,
    extent_of,
    read,
    reference_conv,
    reference_transposed,
)

import torchsparse_lite.compat.torchsparse as torchsparse
from torchsparse_lite.compat.torchsparse import nn as spnn
from torchsparse_lite.compat.torchsparse.nn import functional as F

BATCH = 2


def make_input(n: int = 70, extent: int = 7, channels: int = 3, seed: int = 0, **kwargs) -> torchsparse.SparseTensor:
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(n, extent, BATCH, g)
    feats = torch.randn(len(coords), channels, generator=g, dtype=torch.float64, requires_grad=True)
    return torchsparse.SparseTensor(feats, coords, **kwargs)


def make_conv(cin: int, cout: int, seed: int = 1, **kwargs) -> spnn.Conv3d:
    torch.manual_seed(seed)
    return spnn.Conv3d(cin, cout, **kwargs).double()


def check_grads(out: torch.Tensor, ref: torch.Tensor, params: list[torch.Tensor]) -> None:
    """Same upstream gradient through both: the gradients of every tensor in ``params`` must agree."""
    g = torch.randn_like(ref)
    got = torch.autograd.grad((out * g).sum(), params, retain_graph=True)
    want = torch.autograd.grad((ref * g).sum(), params, retain_graph=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


# (id, kernel_size, stride, padding argument, TorchSparse's offset start)
CASES = [
    ("subm-k3", (3, 3, 3), (1, 1, 1), 0, (1, 1, 1)),
    ("subm-k133", (1, 3, 3), (1, 1, 1), 0, (0, 1, 1)),
    ("subm-k2-even", (2, 2, 2), (1, 1, 1), 0, (0, 0, 0)),
    ("subm-k321-even-not-centred", (3, 2, 1), (1, 1, 1), 0, (0, 0, 0)),
    ("down-k2s2", (2, 2, 2), (2, 2, 2), 0, (0, 0, 0)),
    ("down-k3s2-pad0", (3, 3, 3), (2, 2, 2), 0, (0, 0, 0)),
    ("down-k3s2-pad1", (3, 3, 3), (2, 2, 2), 1, (1, 1, 1)),
    ("down-k233-s211", (2, 3, 3), (2, 1, 1), 0, (0, 1, 1)),
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("name", "ks", "stride", "padding", "start"), CASES, ids=[c[0] for c in CASES])
def test_conv_matches_dense_reference(name, ks, stride, padding, start, bias: bool) -> None:
    x = make_input()
    conv = make_conv(3, 4, kernel_size=ks, stride=stride, padding=padding, bias=bias)
    y = conv(x)
    if stride == (1, 1, 1):
        assert y.coords is x.coords
    else:
        bound = tuple(int(v) + 1 for v in x.coords[:, 1:].amax(0))
        assert torch.equal(y.coords, expected_outputs(x.coords, ks, stride, start, bound))
    assert y.stride == stride and y._caches is x._caches
    ref = reference_conv(x.coords, x.feats, conv.kernel, ks, stride, start, y.coords, BATCH)
    if bias:
        ref = ref + conv.bias
    torch.testing.assert_close(y.feats, ref)
    check_grads(y.feats, ref, [x.feats, conv.kernel] + ([conv.bias] if bias else []))


def test_strided_conv_bound_follows_the_input_extent() -> None:
    coords = torch.tensor([[0, 4, 0, 0], [0, 1, 1, 1]], dtype=torch.int32)
    conv = make_conv(1, 1, kernel_size=2, stride=2)
    # no spatial_range: the grid is max + 1 = 5 wide, a k=2 s=2 conv has 2 outputs per axis: x=4 is dropped
    y = conv(torchsparse.SparseTensor(torch.ones(2, 1, dtype=torch.float64), coords))
    assert y.coords.tolist() == [[0, 0, 0, 0]] and y.spatial_range is None
    # with spatial_range (batch, 6, 6, 6) it is kept, and the output range is (6 - 2) // 2 + 1 = 3
    y = conv(torchsparse.SparseTensor(torch.ones(2, 1, dtype=torch.float64), coords, spatial_range=(1, 6, 6, 6)))
    assert y.coords.tolist() == [[0, 0, 0, 0], [0, 2, 0, 0]] and y.spatial_range == (1, 3, 3, 3)


@pytest.mark.parametrize(
    ("ks", "stride", "padding", "start"), [((3, 3, 3), 2, 1, (1, 1, 1)), ((2, 2, 2), 2, 0, (0,) * 3)]
)
def test_strided_conv_with_spatial_range(ks, stride, padding, start) -> None:
    x = make_input(spatial_range=(BATCH, 9, 8, 7))
    conv = make_conv(3, 2, kernel_size=ks, stride=stride, padding=padding)
    y = conv(x)
    s3 = (stride,) * 3
    assert torch.equal(y.coords, expected_outputs(x.coords, ks, s3, start, (9, 8, 7)))
    assert y.spatial_range == (BATCH, *((n + 2 * p - k) // stride + 1 for n, k, p in zip((9, 8, 7), ks, start)))
    torch.testing.assert_close(y.feats, reference_conv(x.coords, x.feats, conv.kernel, ks, s3, start, y.coords, BATCH))


@pytest.mark.parametrize(
    ("ks", "down_padding", "up_padding", "start"),
    [((2, 2, 2), 0, 0, (0, 0, 0)), ((3, 3, 3), 1, 1, (1, 1, 1)), ((3, 3, 3), 1, 0, (1, 1, 1))],
)
def test_transposed_conv_reuses_the_down_map(ks, down_padding, up_padding, start) -> None:
    x = make_input()
    down = make_conv(3, 4, kernel_size=ks, stride=2, padding=down_padding)
    up = make_conv(4, 3, seed=2, kernel_size=ks, stride=2, padding=up_padding, transposed=True, bias=True)
    h = down(x)
    y = up(h)
    assert torch.equal(y.coords, x.coords) and y.stride == (1, 1, 1)
    # TorchSparse keys the reused map by (stride, kernel, stride, dilation): the up conv's own padding is unused
    ref = reference_transposed(h.coords, h.feats, up.kernel, ks, (2, 2, 2), start, y.coords, BATCH) + up.bias
    torch.testing.assert_close(y.feats, ref)
    check_grads(y.feats, ref, [x.feats, down.kernel, up.kernel])


def test_a_second_strided_conv_reuses_the_cached_map() -> None:
    # TorchSparse caches maps by (tensor stride, kernel, stride, dilation): padding and mode are not in the key
    x = make_input()
    first = make_conv(3, 2, kernel_size=3, stride=2, padding=1)(x)
    second = make_conv(3, 2, kernel_size=3, stride=2, padding=0)(x)
    assert torch.equal(second.coords, first.coords)
    fresh = make_conv(3, 2, kernel_size=3, stride=2, padding=0)(make_input())
    assert not torch.equal(fresh.coords, first.coords)


def test_transposed_conv_without_its_down_conv_is_refused() -> None:
    x = make_input(stride=2)
    with pytest.raises(ValueError, match="no strided conv with that kernel and stride"):
        make_conv(3, 3, kernel_size=2, stride=2, transposed=True)(x)
    with pytest.raises(ValueError, match="divisible"):
        make_conv(3, 3, kernel_size=2, stride=4, transposed=True)(x)


def test_pointwise_conv_is_a_matmul() -> None:
    x = make_input()
    conv = make_conv(3, 5, kernel_size=1, bias=True)
    assert conv.kernel.shape == (3, 5)
    y = conv(x)
    assert y.coords is x.coords
    torch.testing.assert_close(y.feats, x.feats @ conv.kernel + conv.bias)
    strided = make_conv(3, 5, kernel_size=1, stride=2)
    assert strided.kernel.shape == (1, 3, 5)
    z = strided(x)
    assert torch.equal(
        z.coords, expected_outputs(x.coords, (1, 1, 1), (2, 2, 2), (0, 0, 0), extent_of(x.coords, margin=0))
    )


def run_isolated(fn):
    """Run ``fn`` in a copy of the current context, so the mode switches it makes do not leak."""
    return contextvars.copy_context().run(fn)


def test_minkowski_downsample_mode() -> None:
    def body():
        F.set_downsample_mode("minkowski")
        x = make_input()
        conv = make_conv(3, 2, kernel_size=3, stride=2)
        y = conv(x)
        c = x.coords.long()
        want = torch.unique(torch.cat([c[:, :1], c[:, 1:] // 2], 1), dim=0).to(torch.int32)
        assert torch.equal(y.coords, want)
        # taps centred by (k - 1) // 2 (TorchSparse's hash lookup), whatever the padding
        ref = reference_conv(x.coords, x.feats, conv.kernel, (3,) * 3, (2,) * 3, (1,) * 3, y.coords, BATCH)
        torch.testing.assert_close(y.feats, ref)

    run_isolated(body)


def test_hashmap_kmap_mode() -> None:
    def body():
        F.set_kmap_mode("hashmap")
        x = make_input()
        # an even submanifold kernel is centred by (k - 1) // 2 in hashmap mode (0 .. k-1 on the fly)
        conv = make_conv(3, 2, kernel_size=(2, 4, 1))
        y = conv(x)
        torch.testing.assert_close(
            y.feats, reference_conv(x.coords, x.feats, conv.kernel, (2, 4, 1), (1,) * 3, (0, 1, 0), y.coords, BATCH)
        )
        # stride == kernel: unique(c // s), no bound (the even maximum coordinate is kept)
        coords = torch.tensor([[0, 4, 0, 0], [0, 1, 1, 1]], dtype=torch.int32)
        z = make_conv(1, 1, kernel_size=2, stride=2)(torchsparse.SparseTensor(torch.ones(2, 1).double(), coords))
        assert z.coords.tolist() == [[0, 0, 0, 0], [0, 2, 0, 0]]
        with pytest.raises(NotImplementedError, match="hashmap"):
            make_conv(3, 2, kernel_size=3, stride=2)(x)

    run_isolated(body)


@pytest.mark.parametrize("ks", [(3, 3, 3), (2, 2, 2)])
def test_generative_transposed_conv(ks) -> None:
    def body():
        F.set_kmap_mode("hashmap")
        x = make_input(n=40, extent=5, stride=2, spatial_range=(BATCH, 12, 12, 12))
        conv = make_conv(3, 2, kernel_size=ks, stride=2, transposed=True, generative=True, bias=True)
        y = conv(x)
        centred = tuple((k - 1) // 2 for k in ks)
        r = tuple((12 - (k - 1) - 1) // 2 + 1 for k in ks)  # TorchSparse's (down-sampling) formula, padding 0
        assert y.stride == (1, 1, 1) and y.spatial_range == (BATCH, *r) and y._caches is not x._caches
        grown = set()
        for b, cx, cy, cz in x.coords.tolist():
            for dx in range(-centred[0], ks[0] - centred[0]):
                for dy in range(-centred[1], ks[1] - centred[1]):
                    for dz in range(-centred[2], ks[2] - centred[2]):
                        site = [min(max(v * 2 + d, 0), m - 1) for v, d, m in zip((cx, cy, cz), (dx, dy, dz), r)]
                        grown.add((b, *site))
        assert y.coords.tolist() == [list(site) for site in sorted(grown)]
        up = x.coords.clone()
        up[:, 1:] *= 2
        grid = densify(up, x.feats, extent_of(up, y.coords), BATCH)
        w = dense_kernel(conv.kernel, ks, centred)
        ref = read(torch.nn.functional.conv3d(grid, w, padding=centred), y.coords) + conv.bias
        torch.testing.assert_close(y.feats, ref)
        check_grads(y.feats, ref, [x.feats, conv.kernel])

    run_isolated(body)


def test_generative_conv_needs_hashmap_mode_and_a_spatial_range() -> None:
    conv = make_conv(3, 2, kernel_size=3, stride=2, transposed=True, generative=True)
    with pytest.raises(ValueError, match="hashmap"):
        conv(make_input(stride=2, spatial_range=(BATCH, 9, 9, 9)))

    def body():
        F.set_kmap_mode("hashmap")
        with pytest.raises(ValueError, match="spatial_range"):
            conv(make_input(stride=2))

    run_isolated(body)
