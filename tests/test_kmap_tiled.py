"""The search-free map of convs whose windows tile the grid equals the searched map, in every input order."""

from __future__ import annotations

import pytest
import torch
from reference import random_coords

from torchsparse_lite.kmap.geometry import ConvGeometry
from torchsparse_lite.kmap.kernel_map import build_map
from torchsparse_lite.kmap.outputs import output_coords
from torchsparse_lite.kmap.pairs import map_pairs
from torchsparse_lite.kmap.tiled import tiled_map

CASES = [
    ((2, 2, 2), None, 1),
    ((3, 3, 3), None, 2),
    ((2, 1, 2), None, 1),
    ((2, 2, 2), (11, 11, 13), 2),  # odd bounds: the last, partial windows have no output
]


@pytest.mark.parametrize("kernel,bound,batch", CASES)
@pytest.mark.parametrize("shuffled", [False, True])
def test_tiled_map_equals_the_searched_map(kernel, bound, batch, shuffled) -> None:
    g = torch.Generator().manual_seed(sum(kernel) + batch)
    coords = random_coords(600, 11, batch=batch, generator=g)
    if shuffled:
        coords = coords[torch.randperm(coords.shape[0], generator=g)]
    geom = ConvGeometry(kernel, kernel, (1, 1, 1), (0, 0, 0), "conv", bound=bound)
    assert geom.tiles
    out, in_idx, out_idx, counts = tiled_map(coords, geom)
    ref_out = output_coords(coords, geom)
    ref_in, ref_outs, ref_counts, centre = map_pairs(coords, ref_out, geom, "hash")
    assert torch.equal(out, ref_out) and centre is None
    assert counts == ref_counts
    assert torch.equal(in_idx, ref_in) and torch.equal(out_idx, ref_outs)
    kmap = build_map(coords, geom, builder="sort")  # build_map takes the tiled path on the CPU
    assert torch.equal(kmap.in_idx, ref_in) and torch.equal(kmap.out_idx, ref_outs)


def test_tiled_map_refuses_other_geometries() -> None:
    coords = random_coords(50, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="tile the grid"):
        tiled_map(coords, ConvGeometry((3, 3, 3), (2, 2, 2), (1, 1, 1), None, "conv"))


def test_tiled_map_of_no_inputs() -> None:
    empty = torch.zeros(0, 4, dtype=torch.int32)
    out, in_idx, out_idx, counts = tiled_map(empty, ConvGeometry((2, 2, 2), (2, 2, 2), (1, 1, 1), (0, 0, 0), "conv"))
    assert out.shape == (0, 4) and in_idx.numel() == out_idx.numel() == 0 and counts == (0,) * 8
