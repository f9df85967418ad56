"""ConvGeometry: explicit padding, spatial bounds, tap subsets and how transposed convs find their map.

Reference: a dense ``F.conv3d`` / ``F.conv_transpose3d`` in float64 on the
grid of exactly the bound's shape with the same padding, stride, dilation (and
output padding) — the sparse outputs must be exactly the dense output's
support (indicator weights) and the features must match forward and backward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import dense_weight, random_coords

import torchsparse_lite as tsl
from torchsparse_lite import SparseTensor
from torchsparse_lite import nn as snn
from torchsparse_lite.kmap import build_kernel_map
from torchsparse_lite.kmap.geometry import ConvGeometry
from torchsparse_lite.kmap.kernel_map import build_map

TOL = {"atol": 1e-9, "rtol": 1e-9}

# (kernel, stride, dilation, padding, bound)
CONV_CASES = [
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (0, 0, 0), (9, 8, 7)),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (9, 8, 7)),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (0, 1, 1), (9, 9, 8)),
    ((3, 1, 1), (2, 1, 1), (1, 1, 1), (0, 0, 0), (11, 6, 5)),
    ((3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2), (8, 8, 8)),
    ((2, 2, 2), (2, 2, 2), (1, 1, 1), (0, 0, 0), (9, 8, 8)),
    ((4, 2, 3), (3, 2, 1), (1, 2, 1), (1, 0, 2), (10, 9, 6)),
]


def _coords(bound: tuple[int, int, int], n: int = 90, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = random_coords(n, max(bound), 2, g)
    return c[(c[:, 1:] < torch.tensor(bound)).all(1)]


def _dense(x: SparseTensor, bound: tuple[int, int, int]) -> torch.Tensor:
    return x.dense(bound)


def _read(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    c = coords.long()
    return grid[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def _run(layer: snn.Conv3d, x: SparseTensor, dense_fn, bound) -> None:
    """Compare features and both gradients with ``dense_fn(grid, w)``, and outputs with its support."""
    g = torch.Generator().manual_seed(1)
    feats = x.feats.clone().requires_grad_(True)
    y = layer(x.replace(feats))
    feats_d = x.feats.clone().requires_grad_(True)
    w_d = dense_weight(layer.weight.detach().clone(), layer.kernel_size).requires_grad_(True)
    out = dense_fn(_dense(x.replace(feats_d), bound), w_d)
    assert tuple(out.shape[2:]) == y.spatial_range, "output shape must follow the dense conv's formula"
    ref = _read(out, y.coords)
    torch.testing.assert_close(y.feats, ref, **TOL)
    r = torch.randn(y.feats.shape, generator=g, dtype=y.feats.dtype)
    (y.feats * r).sum().backward()
    (ref * r).sum().backward()
    torch.testing.assert_close(feats.grad, feats_d.grad, **TOL)
    w_grad = dense_weight(layer.weight.grad, layer.kernel_size)
    torch.testing.assert_close(w_grad, w_d.grad, **TOL)
    ones = torch.ones_like(w_d)
    support = dense_fn(_dense(x.replace(torch.ones(len(x), x.feats.shape[1], dtype=torch.float64)), bound), ones)
    active = torch.zeros(support[:, 0].shape, dtype=torch.bool)
    c = y.coords.long()
    active[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = True
    assert torch.equal(active, support[:, 0] > 0), "outputs must be exactly the dense output's support"


@pytest.mark.parametrize("builder", ["hash", "sort"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"k{c[0]}s{c[1]}d{c[2]}p{c[3]}" for c in CONV_CASES])
def test_bounded_padded_conv_matches_dense(case, builder: str) -> None:
    ks, st, dl, pad, bound = case
    coords = _coords(bound)
    x = SparseTensor(torch.randn(len(coords), 2, dtype=torch.float64), coords, spatial_range=bound)
    layer = snn.Conv3d(2, 3, ks, st, dl, padding=pad, submanifold=False).double()
    with tsl.use_config(kmap_builder=builder):
        _run(layer, x, lambda grid, w: F.conv3d(grid, w, stride=st, padding=pad, dilation=dl), bound)


@pytest.mark.parametrize(
    ("ks", "st", "pad", "opad"),
    [((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 0, 1)), ((2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0)),
     ((3, 1, 3), (2, 1, 1), (0, 0, 1), (1, 0, 0))],
)  # fmt: skip
def test_bounded_generative_transposed_matches_dense(ks, st, pad, opad) -> None:
    bound = (5, 6, 4)
    coords = _coords(bound, 50)
    x = SparseTensor(torch.randn(len(coords), 2, dtype=torch.float64), coords, stride=2, spatial_range=bound)
    layer = snn.Conv3d(2, 3, ks, st, padding=pad, transposed=True, generative=True).double()
    layer.geometry = ConvGeometry(ks, st, (1, 1, 1), pad, "transposed", output_padding=opad)

    def dense(grid, w):
        return F.conv_transpose3d(grid, w.transpose(0, 1), stride=st, padding=pad, output_padding=opad)

    _run(layer, x, dense, bound)


def test_submanifold_with_uncentred_padding_matches_dense() -> None:
    """k=3, padding 0: taps at 0, 1, 2 (not centred); outputs stay the inputs."""
    bound = (8, 8, 8)
    coords = _coords(bound, 120)
    x = SparseTensor(torch.randn(len(coords), 2, dtype=torch.float64), coords, spatial_range=bound)
    layer = snn.Conv3d(2, 2, 3, padding=0).double()
    y = layer(x)
    assert y.coords is x.coords
    grid = F.pad(x.dense(bound), (0, 2, 0, 2, 0, 2))
    ref = _read(F.conv3d(grid, dense_weight(layer.weight.detach(), (3, 3, 3))), coords)
    torch.testing.assert_close(y.feats, ref, **TOL)
    assert not build_kernel_map(coords, 3, padding=0).symmetric


def test_out_shape_formula_matches_torch() -> None:
    for ks, st, dl, pad, bound in CONV_CASES:
        g = ConvGeometry(ks, st, dl, pad, "conv", bound=bound)
        dense = F.conv3d(torch.zeros(1, 1, *bound), torch.zeros(1, 1, *ks), stride=st, padding=pad, dilation=dl)
        assert g.out_shape == tuple(dense.shape[2:])


def test_inputs_outside_the_bound_are_refused() -> None:
    coords = torch.tensor([[0, 1, 2, 3], [0, 4, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="spatial shape"):
        build_kernel_map(coords, 3, bound=(4, 5, 5))


def test_geometry_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="padding"):
        ConvGeometry((3, 3, 3), padding=-1)
    with pytest.raises(ValueError, match="mode"):
        ConvGeometry((3, 3, 3), mode="sideways")
    with pytest.raises(ValueError, match="stride 1"):
        ConvGeometry((3, 3, 3), (2, 2, 2), mode="submanifold")
    with pytest.raises(ValueError, match="output_padding"):
        ConvGeometry((3, 3, 3), (2, 2, 2), mode="transposed", output_padding=2)
    with pytest.raises(ValueError, match="offsets_subset"):
        ConvGeometry((3, 3, 3), offsets_subset=(0, 27))
    with pytest.raises(TypeError, match="kernel_size"):
        ConvGeometry(True)


def test_default_padding_rule_is_explicit() -> None:
    """Odd kernels are centred (padding d*(k//2)); even kernels use offsets 0..k-1 (padding 0)."""
    assert ConvGeometry((3, 2, 5), dilation=(2, 1, 1)).padding == (2, 0, 2)
    offs = ConvGeometry((2, 2, 2)).offsets()
    assert offs.min().item() == 0 and offs.max().item() == 1
    assert ConvGeometry((4, 4, 4), padding=1).offsets()[:, 0].unique().tolist() == [-1, 0, 1, 2]


# ------------------------------------------------------------- tap subsets
@pytest.mark.parametrize("mode", ["submanifold", "conv", "transposed"])
def test_tap_subset_equals_full_map_restricted(mode: str) -> None:
    """A cross-shaped kernel's map holds exactly the full map's pairs of the kept taps."""
    coords = _coords((10, 10, 10), 150, seed=3)
    stride = (1, 1, 1) if mode == "submanifold" else (2, 2, 2)
    cross = (4, 10, 12, 13, 14, 16, 22)
    full = build_map(coords, ConvGeometry((3, 3, 3), stride, mode="conv" if mode == "transposed" else mode))
    if mode == "transposed":
        full = full.transpose()
        part = build_map(full.in_coords, ConvGeometry((3, 3, 3), stride, mode=mode, offsets_subset=cross),
                         out_coords=full.out_coords)  # fmt: skip
    else:
        part = build_map(coords, ConvGeometry((3, 3, 3), stride, mode=mode, offsets_subset=cross))
    assert part.volume == len(cross)
    for j, k in enumerate(cross):
        (s, e), (ps, pe) = full.bounds[k], part.bounds[j]
        assert _pairs(part, ps, pe) == _pairs(full, s, e)
    if mode == "conv":  # outputs: exactly the sites some kept tap reaches
        assert torch.equal(torch.unique(part.out_idx), torch.arange(part.n_out))
        assert part.n_out < full.n_out


def _pairs(kmap, start: int, end: int) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(output coordinate, input coordinate) pairs of one tap's range."""
    outs = kmap.out_coords[kmap.out_idx[start:end]].tolist()
    ins = kmap.in_coords[kmap.in_idx[start:end]].tolist()
    return {(tuple(a), tuple(b)) for a, b in zip(outs, ins)}


# ------------------------------------------------ transposed map discovery
def _down_up(ks=2, st=2):
    coords = _coords((12, 12, 12), 200, seed=5)
    x = SparseTensor(torch.randn(len(coords), 3), coords)
    down = snn.Conv3d(3, 4, ks, st)
    up = snn.Conv3d(4, 3, ks, st, transposed=True)
    return x, down, up


def test_transposed_finds_down_map_by_coordinates() -> None:
    """A coarse tensor rebuilt on cloned coords (same cache) still gets the fine coords back, in order."""
    x, down, up = _down_up(3, 2)
    y = down(x)
    rebuilt = SparseTensor(y.feats.detach().clone(), y.coords.clone(), y.stride, cache=y.cache)
    z = up(rebuilt)
    assert torch.equal(z.coords, x.coords) and z.stride == (1, 1, 1)
    torch.testing.assert_close(z.feats, up(y).feats)


def test_transposed_without_down_map_refuses() -> None:
    x, down, up = _down_up()
    y = down(x)
    fresh = SparseTensor(y.feats.detach(), y.coords.clone(), y.stride)  # new cache: the down map is gone
    with pytest.raises(ValueError, match="generative=True"):
        up(fresh)
    mismatched = snn.Conv3d(4, 3, 3, 2, transposed=True)
    with pytest.raises(ValueError, match="no down-sampling conv"):
        mismatched(y)
    gen = snn.Conv3d(4, 3, 2, 2, transposed=True, generative=True)(fresh)
    assert len(gen) > 0 and gen.stride == (1, 1, 1)


def test_map_key_stores_and_finds_maps() -> None:
    x, _, _ = _down_up()
    down = snn.Conv3d(3, 4, 2, 2, map_key="d1")
    up = snn.Conv3d(4, 3, 2, 2, transposed=True, map_key="d1")
    y = down(x)
    assert y.cache.named["d1"].mode == "conv"
    assert torch.equal(up(y).coords, x.coords)
    with pytest.raises(ValueError, match="'nope'"):
        snn.Conv3d(4, 3, 2, 2, transposed=True, map_key="nope")(y)
    sub_a = snn.Conv3d(3, 3, 3, map_key="s1")
    sub_a(x)
    with pytest.raises(ValueError, match="different ones"):
        snn.Conv3d(4, 4, 3, map_key="s1")(y.replace(y.feats.detach()))
    with pytest.raises(ValueError, match="kernel"):
        snn.Conv3d(3, 3, 5, map_key="s1")(x)
    assert snn.Conv3d(3, 3, 3, map_key="s1").kernel_map(x) is x.cache.named["s1"]


def test_bounded_down_up_restores_the_fine_shape() -> None:
    bound = (9, 9, 9)
    coords = _coords(bound, 150)
    x = SparseTensor(torch.randn(len(coords), 2), coords, spatial_range=bound)
    y = snn.Conv3d(2, 2, 3, 2, padding=1)(x)
    assert y.spatial_range == (5, 5, 5)
    z = snn.Conv3d(2, 2, 3, 2, padding=1, transposed=True)(y)
    assert z.spatial_range == bound and torch.equal(z.coords, coords)
