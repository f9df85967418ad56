"""Issue 2: kernel maps (hash == sort == brute force) and float64 gradcheck of the conv autograd.

The brute-force map compares every output with every input for every offset
(``in = out * stride + offset``, or ``out = in * stride + offset`` for a
transposed map) with NumPy broadcasting, independent of the packing and of
both indexes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import random_coords

from torchsparse_lite.functional.conv import SparseConvFunction
from torchsparse_lite.kmap import KernelMap, build_kernel_map, kernel_offsets, pack, triple
from torchsparse_lite.kmap.geometry import ConvGeometry
from torchsparse_lite.kmap.kernel_map import build_map

KERNELS = [1, 2, 3, (1, 3, 3), (3, 2, 1)]
MODES = [("submanifold", "spconv"), ("conv", "spconv"), ("conv", "minkowski"), ("transposed", "spconv")]


def brute_force_pairs(kmap: KernelMap) -> list[set[tuple[int, int]]]:
    """Per offset, the set of (in_row, out_row) pairs by exhaustive comparison."""
    offs = kernel_offsets(kmap.kernel_size, kmap.dilation).numpy()
    s = np.array(kmap.stride)
    ic = kmap.in_coords.numpy().astype(np.int64)
    oc = kmap.out_coords.numpy().astype(np.int64)
    out = []
    for off in offs:
        if kmap.mode == "transposed":
            target = ic[:, None, 1:] * s + off  # [n_in, 1, 3] -> matches out coords
            eq = (target == oc[None, :, 1:]).all(-1) & (ic[:, None, 0] == oc[None, :, 0])
        else:
            target = oc[None, :, 1:] * s + off  # [1, n_out, 3] -> matches in coords
            eq = (ic[:, None, 1:] == target).all(-1) & (ic[:, None, 0] == oc[None, :, 0])
        i, o = np.nonzero(eq)
        out.append(set(zip(i.tolist(), o.tolist())))
    return out


def map_pairs(kmap: KernelMap) -> list[set[tuple[int, int]]]:
    """Per offset, the map's (in_row, out_row) pairs as a set (checks there are no repeats)."""
    out = []
    for start, end in kmap.bounds:
        pairs = list(zip(kmap.in_idx[start:end].tolist(), kmap.out_idx[start:end].tolist()))
        assert len(set(pairs)) == len(pairs), "a pair appears twice for one offset"
        out.append(set(pairs))
    return out


def assert_maps_identical(a: KernelMap, b: KernelMap) -> None:
    assert a.counts == b.counts
    assert torch.equal(a.in_idx, b.in_idx)
    assert torch.equal(a.out_idx, b.out_idx)
    assert torch.equal(a.out_coords, b.out_coords)
    assert a.identity_offset == b.identity_offset and a.symmetric == b.symmetric


def expected_out_coords(coords: np.ndarray, ks, st_, dl, mode: str, dmode: str) -> set[tuple[int, ...]]:
    """Output coordinate set by definition (Python sets, no torch)."""
    offs = kernel_offsets(ks, dl).numpy()
    s = np.array(st_)
    out: set[tuple[int, ...]] = set()
    for b, *xyz in coords.tolist():
        c = np.array(xyz)
        if mode == "submanifold":
            out.add((b, *xyz))
        elif mode == "conv" and dmode == "minkowski":
            out.add((b, *(c // s).tolist()))
        elif mode == "conv":
            for off in offs:
                d = c - off
                if (d % s == 0).all() and (d >= 0).all():
                    out.add((b, *(d // s).tolist()))
        else:
            for off in offs:
                o = c * s + off
                if (o >= 0).all():
                    out.add((b, *o.tolist()))
    return out


@st.composite
def coord_sets(draw, max_n: int = 40, extent: int = 7) -> torch.Tensor:
    n = draw(st.integers(1, max_n))
    batch = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    coords = random_coords(n, extent, batch, torch.Generator().manual_seed(seed))
    if draw(st.booleans()):  # rows out of key order: the sort index's permuted path
        coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(seed + 1))]
    return coords


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    coords=coord_sets(),
    kernel=st.sampled_from(KERNELS),
    stride=st.sampled_from([1, 2, 3, (1, 2, 2)]),
    dilation=st.sampled_from([1, 2, (1, 1, 2)]),
    mode=st.sampled_from(MODES),
)
def test_hash_sort_bruteforce_identical(coords, kernel, stride, dilation, mode) -> None:
    mode_name, dmode = mode
    ks, sd, dl = triple(kernel, "k"), triple(stride, "s"), triple(dilation, "d")
    if mode_name == "submanifold":
        sd = (1, 1, 1)
    maps = {
        b: build_kernel_map(coords, ks, sd, dl, mode=mode_name, builder=b, downsample_mode=dmode)
        for b in ("hash", "sort")
    }
    assert_maps_identical(maps["hash"], maps["sort"])
    kmap = maps["hash"]
    got = {tuple(r) for r in kmap.out_coords.tolist()}
    assert len(got) == kmap.n_out
    assert got == expected_out_coords(coords.numpy(), ks, sd, dl, mode_name, dmode)
    assert map_pairs(kmap) == brute_force_pairs(kmap)
    if kmap.symmetric:
        k = kmap.volume
        pairs = map_pairs(kmap)
        for i in range(k):
            assert pairs[i] == {(o, n) for n, o in pairs[k - 1 - i]}
    if kmap.identity_offset is not None:
        s, e = kmap.bounds[kmap.identity_offset]
        assert torch.equal(kmap.in_idx[s:e], torch.arange(kmap.n_in))
        assert torch.equal(kmap.out_idx[s:e], torch.arange(kmap.n_in))


@pytest.mark.parametrize("builder", ["hash", "sort"])
@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(3, 2, 1), (5, 3, (2, 1, 1)), ((3, 1, 2), 2, (2, 1, 1))])
def test_map_at_top_of_coordinate_range(builder: str, kernel, stride, dilation) -> None:
    """Inputs within the padding of 65535: outputs o with o * s > 65535 still meet their inputs.

    Found by the seeded fuzz run (seeds 115, 141). Pack-with-OR is not linear
    once a field exceeds 16 bits, so base keys of ``o * s`` must not be packed
    before the (negative) offset brings them back in range.
    """
    top = [[0, 65535, 65535, 65535], [0, 65534, 65535, 65533], [0, 65531, 65530, 65535], [1, 65535, 0, 65535]]
    # traps: where a key of an out-of-range field (65536) would alias if it carried into the next field
    traps = [[1, 0, 65535, 65535], [1, 0, 0, 0], [0, 65535, 0, 65535], [0, 65535, 65535, 0], [2, 0, 0, 65535],
             [1, 0, 65534, 65535], [0, 65535, 1, 65535]]
    coords = torch.tensor(top + traps, dtype=torch.int32)
    ks, sd, dl = triple(kernel, "k"), triple(stride, "s"), triple(dilation, "d")
    kmap = build_kernel_map(coords, ks, sd, dl, mode="conv", builder=builder)
    assert map_pairs(kmap) == brute_force_pairs(kmap)
    up = build_kernel_map(kmap.out_coords, ks, sd, dl, mode="transposed", out_coords=coords, builder=builder)
    assert map_pairs(up) == brute_force_pairs(up)
    in_key_order = torch.argsort(pack(coords))
    for order in (in_key_order, torch.randperm(len(coords), generator=torch.Generator().manual_seed(0))):
        sub = build_kernel_map(coords[order], ks, 1, dl, mode="submanifold", builder=builder)
        assert map_pairs(sub) == brute_force_pairs(sub)


@pytest.mark.parametrize("kernel", [(2, 1, 1), 3, (1, 2, 3)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_stride_one_transposed_map_is_brute_force(kernel, shuffle: bool) -> None:
    """Stride-1 transposed maps query ``c - d`` (no residue check): both builders against brute force."""
    coords = random_coords(50, 6, 2, torch.Generator().manual_seed(7))
    if shuffle:
        coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(8))]
    maps = {b: build_kernel_map(coords, kernel, 1, mode="transposed", builder=b) for b in ("hash", "sort")}
    assert_maps_identical(maps["hash"], maps["sort"])
    assert map_pairs(maps["sort"]) == brute_force_pairs(maps["sort"])
    tiny = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    pairs = map_pairs(build_kernel_map(tiny, (2, 1, 1), 1, mode="transposed", builder="sort"))
    assert pairs == [{(0, 0), (1, 1)}, {(0, 1), (1, 2)}]  # outputs x = 0, 1, 2; tap d=1 maps x -> x+1


def test_transpose_swaps_roles() -> None:
    coords = random_coords(60, 8, 2, torch.Generator().manual_seed(3))
    down = build_kernel_map(coords, (3, 3, 3), (2, 2, 2), (1, 1, 1), mode="conv")
    up = down.transpose()
    assert up.mode == "transposed" and up.out_coords is coords and up.in_coords is down.out_coords
    assert map_pairs(up) == [{(o, i) for i, o in p} for p in map_pairs(down)]
    # the generative transposed map from the coarse coords, restricted to the fine set, is the same map
    gen = build_kernel_map(down.out_coords, (3, 3, 3), (2, 2, 2), (1, 1, 1), mode="transposed", out_coords=coords)
    assert map_pairs(gen) == map_pairs(up)


# ------------------------------------------------------------- gradcheck
def _gradcheck_maps() -> dict[str, KernelMap]:
    coords = random_coords(12, 4, 2, torch.Generator().manual_seed(7))
    down = build_kernel_map(coords, (3, 3, 3), (2, 2, 2), (1, 1, 1), mode="conv")
    return {
        "submanifold": build_kernel_map(coords, (3, 3, 3), mode="submanifold"),
        "submanifold_even": build_kernel_map(coords, (2, 1, 3), mode="submanifold", builder="sort"),
        "generative": build_kernel_map(coords, (3, 3, 3), mode="conv"),
        "strided_spconv": down,
        "strided_minkowski": build_kernel_map(coords, (2, 2, 2), (2, 2, 2), mode="conv", downsample_mode="minkowski"),
        "dilated": build_kernel_map(coords, (3, 3, 3), (2, 2, 2), (2, 2, 2), mode="conv"),
        "transposed_cached": down.transpose(),
        "transposed_generative": build_kernel_map(down.out_coords, (2, 2, 2), (2, 2, 2), mode="transposed"),
    }


GRADCHECK_MAPS = _gradcheck_maps()


@pytest.mark.parametrize(
    ("name", "chunk_rows"),
    [(n, 1 << 17) for n in sorted(GRADCHECK_MAPS)]
    + [("submanifold", 3), ("strided_spconv", 3), ("transposed_cached", 5)],
)
def test_gradcheck_float64(name: str, chunk_rows: int) -> None:
    """Jacobian check of SparseConvFunction (full, or fast mode on the big maps); small chunks exercise chunking."""
    kmap = GRADCHECK_MAPS[name]
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(kmap.n_in, 2, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(kmap.volume, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert sum(kmap.counts) > 0
    fast = name in ("generative", "dilated", "transposed_generative")  # big maps: random-projection check
    assert torch.autograd.gradcheck(
        lambda f, w: SparseConvFunction.apply(f, w, kmap, chunk_rows),
        (feats, weight),
        eps=1e-6,
        atol=1e-6,
        fast_mode=fast,
    )


def test_submanifold_map_onto_other_coords_is_refused() -> None:
    """A submanifold map's outputs are its inputs: other output coordinates get a ValueError, not a wrong map."""
    coords = random_coords(300, 8, generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(0))
    for given_coords in (coords, coords[perm]):  # in key order and shuffled (the sort builder's two paths)
        for builder in ("sort", "hash"):
            with pytest.raises(ValueError, match="submanifold map's outputs are its inputs"):
                build_map(given_coords, ConvGeometry((3, 3, 3)), out_coords=given_coords[::3], builder=builder)
            same = build_map(given_coords, ConvGeometry((3, 3, 3)), out_coords=given_coords.clone(), builder=builder)
            assert_maps_identical(same, build_kernel_map(given_coords, 3, builder=builder))
