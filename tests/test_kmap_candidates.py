"""The search-free map of strided and generative convs (their inputs' candidates) equals the searched map.

The output sets are checked against a brute-force oracle written here (every
input through every tap, one at a time), the pairs against the hash
builder's search, in key order and shuffled, batched, bounded and empty.
"""

from __future__ import annotations

import pytest
import torch
from reference import random_coords

from torchsparse_lite.kmap.candidates import candidates, enumerated_map, enumerates
from torchsparse_lite.kmap.geometry import ConvGeometry, kernel_taps
from torchsparse_lite.kmap.kernel_map import build_map
from torchsparse_lite.kmap.keys import pack, unpack
from torchsparse_lite.kmap.outputs import output_coords
from torchsparse_lite.kmap.pairs import map_pairs

# (kernel, stride, dilation, padding, mode, bound, taps)
CASES = [
    ((2, 2, 2), (2, 2, 2), 1, (0, 0, 0), "conv", None, None),  # MinkUNet's down-sampling: tiles
    ((2, 2, 2), (2, 2, 2), 1, (0, 0, 0), "conv", (11, 11, 13), None),  # odd bound: partial windows dropped
    ((2, 1, 2), (2, 1, 2), 1, (0, 0, 0), "conv", None, None),
    ((3, 3, 3), (2, 2, 2), 1, None, "conv", None, None),  # SECOND's k3 s2 p1
    ((3, 3, 3), (2, 2, 2), 1, (0, 0, 0), "conv", (12, 11, 13), None),
    ((1, 3, 1), (1, 2, 1), 1, None, "conv", None, None),
    ((3, 3, 3), (1, 1, 1), 1, None, "conv", None, None),  # generative stride-1 conv
    ((3, 3, 3), (2, 2, 2), 2, None, "conv", None, None),  # dilated
    ((5, 3, 3), (3, 2, 2), 1, (2, 1, 0), "conv", (13, 12, 12), None),
    ((3, 3, 3), (2, 2, 2), 1, None, "conv", None, "cross"),  # a tap subset
    ((2, 2, 2), (2, 2, 2), 1, (0, 0, 0), "transposed", None, None),  # generative up-sampling
    ((3, 3, 3), (2, 2, 2), 1, None, "transposed", (12, 12, 12), None),
    ((3, 3, 3), (1, 1, 1), 1, None, "transposed", None, "star"),
]


def _geometry(kernel, stride, dilation, padding, mode, bound, taps) -> ConvGeometry:
    subset = None if taps is None else kernel_taps(kernel, taps)
    return ConvGeometry(kernel, stride, (dilation,) * 3, padding, mode, "spconv", bound, offsets_subset=subset)


def _oracle_outputs(coords: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Every output site, tap by tap: ``(c - d) / s`` where exact (conv) or ``c * s + d`` (transposed)."""
    c = coords.to(torch.int64)
    s = torch.tensor(geom.stride)
    sites = []
    for d in geom.offsets():
        if geom.mode == "conv":
            ok = ((c[:, 1:] - d) % s == 0).all(1)
            o = torch.div(c[ok, 1:] - d, s, rounding_mode="floor")
            b = c[ok, :1]
        else:
            o, b = c[:, 1:] * s + d, c[:, :1]
        keep = (o >= 0).all(1)
        if geom.out_shape is not None:
            keep &= (o < torch.tensor(geom.out_shape)).all(1)
        sites.append(torch.cat([b[keep], o[keep]], 1))
    return unpack(torch.unique(pack(torch.cat(sites))))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[4]}-k{c[0]}-s{c[1]}-d{c[2]}-{c[6] or 'box'}")
@pytest.mark.parametrize("batch,shuffled", [(1, False), (2, False), (2, True)])
def test_enumerated_map_equals_the_searched_map(case, batch, shuffled) -> None:
    geom = _geometry(*case)
    assert enumerates(geom)
    g = torch.Generator().manual_seed(len(CASES) * batch + CASES.index(case))
    coords = random_coords(500, 11, batch=batch, generator=g)
    if shuffled:
        coords = coords[torch.randperm(coords.shape[0], generator=g)]
    ref_out = _oracle_outputs(coords, geom)
    assert ref_out.shape[0] > 0
    assert torch.equal(output_coords(coords, geom), ref_out)
    out, in_idx, out_idx, counts = enumerated_map(coords, geom)
    ref_in, ref_outs, ref_counts, centre = map_pairs(coords, ref_out, geom, "hash")
    assert torch.equal(out, ref_out) and centre is None
    assert counts == ref_counts and sum(counts) == in_idx.numel()
    assert torch.equal(in_idx, ref_in) and torch.equal(out_idx, ref_outs)
    kmap = build_map(coords, geom, builder="sort")  # build_map takes this path on the CPU
    assert torch.equal(kmap.out_coords, ref_out)
    assert torch.equal(kmap.in_idx, ref_in) and torch.equal(kmap.out_idx, ref_outs)


def test_minkowski_rule_with_overlapping_windows_is_not_enumerated() -> None:
    geom = ConvGeometry((3, 3, 3), (2, 2, 2), (1, 1, 1), None, "conv", "minkowski")
    assert not enumerates(geom)
    with pytest.raises(ValueError, match="not the candidates"):
        candidates(torch.zeros(1, 4, dtype=torch.int32), geom)
    assert enumerates(ConvGeometry((2, 2, 2), (2, 2, 2), (1, 1, 1), (0, 0, 0), "conv", "minkowski"))


def test_outputs_past_the_key_range_raise() -> None:
    coords = torch.tensor([[0, 65535, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="beyond 65535 on axis x"):
        enumerated_map(coords, ConvGeometry((2, 2, 2), (2, 2, 2), (1, 1, 1), (0, 0, 0), "transposed"))


def test_key_range_is_checked_after_every_axis_drops_its_outside_candidates() -> None:
    # A k1 transposed conv with padding 1 on y: output y = 2 * y_in - 1, outside the grid for y_in = 0, so the
    # input's only candidate is dropped whichever axis (x or z) would pass the key range.
    geom = ConvGeometry((1, 1, 1), (2, 2, 2), (1, 1, 1), (0, 1, 0), "transposed")
    for coords in ([[0, 65535, 0, 0]], [[0, 0, 0, 65535]]):
        assert output_coords(torch.tensor(coords, dtype=torch.int32), geom).shape == (0, 4)
    with pytest.raises(ValueError, match="beyond 65535 on axis z"):
        output_coords(torch.tensor([[0, 0, 1, 65535]], dtype=torch.int32), geom)


def test_enumerated_map_of_no_inputs() -> None:
    empty = torch.zeros(0, 4, dtype=torch.int32)
    for geom in (_geometry(*CASES[0]), _geometry(*CASES[3]), _geometry(*CASES[10])):
        out, in_idx, out_idx, counts = enumerated_map(empty, geom)
        assert out.shape == (0, 4) and in_idx.numel() == out_idx.numel() == 0 and counts == (0,) * geom.volume
