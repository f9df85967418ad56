"""Dense float64 references for TorchSparse 2.1 convs, written from TorchSparse's definitions (not from our code).

TorchSparse tap order (``torchsparse/nn/utils/kernel.py::get_kernel_offsets``
and the ``odd``/even branches of 2.1's map kernels): for an odd kernel volume
the offsets are enumerated ``for z: for y: for x`` (x fastest), for an even
volume ``for x: for y: for z`` (z fastest). Row ``t`` of TorchSparse's
``kernel`` belongs to the ``t``-th offset of that enumeration. The per-axis
offsets are ``u - start`` for ``u`` in ``0 .. k-1``; ``start`` depends on the
conv (given explicitly by every test case).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Triple = tuple[int, int, int]


def torchsparse_taps(kernel_size: Triple, start: Triple) -> list[tuple[Triple, int]]:
    """[(offset (dx, dy, dz), TorchSparse kernel row)], enumerated in TorchSparse's order by hand."""
    axes = [[u - p for u in range(k)] for k, p in zip(kernel_size, start)]
    if (kernel_size[0] * kernel_size[1] * kernel_size[2]) % 2:
        offsets = [(x, y, z) for z in axes[2] for y in axes[1] for x in axes[0]]
    else:
        offsets = [(x, y, z) for x in axes[0] for y in axes[1] for z in axes[2]]
    return [(off, t) for t, off in enumerate(offsets)]


def dense_kernel(kernel: torch.Tensor, kernel_size: Triple, start: Triple) -> torch.Tensor:
    """TorchSparse ``kernel`` [K, Cin, Cout] -> ``F.conv3d`` weight [Cout, Cin, kx, ky, kz] (differentiable)."""
    kx, ky, kz = kernel_size
    row = {off: t for off, t in torchsparse_taps(kernel_size, start)}
    rows = [
        row[(ux - start[0], uy - start[1], uz - start[2])] for ux in range(kx) for uy in range(ky) for uz in range(kz)
    ]
    w = kernel.reshape(len(rows), kernel.shape[-2], kernel.shape[-1])[torch.tensor(rows)]
    return w.reshape(kx, ky, kz, w.shape[1], w.shape[2]).permute(4, 3, 0, 1, 2)


def densify(coords: torch.Tensor, feats: torch.Tensor, extent: Triple, batch: int) -> torch.Tensor:
    """[N, 4] (b, x, y, z) + [N, C] -> dense [B, C, X, Y, Z] (differentiable in feats)."""
    c = coords.long()
    grid = feats.new_zeros((batch, *extent, feats.shape[1]))
    grid = grid.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), feats)
    return grid.permute(0, 4, 1, 2, 3)


def read(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Dense [B, C, X, Y, Z] read at [M, 4] coords -> [M, C]."""
    c = coords.long()
    return grid[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def extent_of(*coords: torch.Tensor, margin: int = 4) -> Triple:
    hi = torch.cat([c[:, 1:] for c in coords]).amax(0)
    return tuple(int(v) + 1 + margin for v in hi)  # type: ignore[return-value]


def reference_conv(
    coords: torch.Tensor, feats: torch.Tensor, kernel: torch.Tensor, kernel_size: Triple, stride: Triple,
    start: Triple, out_coords: torch.Tensor, batch: int,
) -> torch.Tensor:  # fmt: skip
    """Output o = sum over taps of in[o * s + offset] @ kernel[t], read at ``out_coords``."""
    grid = densify(coords, feats, extent_of(coords, out_coords * torch.tensor([1, *stride])), batch)
    return read(F.conv3d(grid, dense_kernel(kernel, kernel_size, start), stride=stride, padding=start), out_coords)


def reference_transposed(
    coords: torch.Tensor, feats: torch.Tensor, kernel: torch.Tensor, kernel_size: Triple, stride: Triple,
    start: Triple, out_coords: torch.Tensor, batch: int,
) -> torch.Tensor:  # fmt: skip
    """Output of input i through tap t is i * s + offset_t, weighted by kernel[t]; read at ``out_coords``."""
    grid = densify(coords, feats, extent_of(coords, out_coords), batch)
    w = dense_kernel(kernel, kernel_size, start).transpose(0, 1)
    return read(F.conv_transpose3d(grid, w, stride=stride, padding=start), out_coords)


def expected_outputs(coords: torch.Tensor, kernel_size: Triple, stride: Triple, start: Triple, bound: Triple):
    """The "spconv" rule: every output site of the dense conv on the grid ``bound`` whose window holds an input."""
    occ = densify(coords, torch.ones(len(coords), 1, dtype=torch.float64), bound, int(coords[:, 0].max()) + 1)
    hit = F.conv3d(occ, torch.ones(1, 1, *kernel_size, dtype=torch.float64), stride=stride, padding=start)
    idx = torch.nonzero(hit[:, 0] > 0)
    return idx.to(torch.int32)


# ------------------------------------------------------------------ the references themselves
def test_tap_order_by_hand_matches_torchsparse_examples() -> None:
    # k=2: get_kernel_offsets gives offsets 0..1 per axis, z fastest.
    taps = [off for off, _ in torchsparse_taps((2, 2, 2), (0, 0, 0))]
    assert taps[:4] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)] and taps[4] == (1, 0, 0)
    # k=3: -1..1 per axis, x fastest; the centre is row 13.
    taps = [off for off, _ in torchsparse_taps((3, 3, 3), (1, 1, 1))]
    assert taps[:3] == [(-1, -1, -1), (0, -1, -1), (1, -1, -1)] and taps[13] == (0, 0, 0)
    # an even volume with odd axes is still z fastest
    taps = [off for off, _ in torchsparse_taps((3, 2, 1), (0, 0, 0))]
    assert taps == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (2, 0, 0), (2, 1, 0)]


def test_reference_conv_is_a_pairwise_sum() -> None:
    g = torch.Generator().manual_seed(5)
    coords = torch.tensor([[0, 2, 2, 2], [0, 3, 2, 2], [0, 2, 3, 2], [1, 1, 1, 1]], dtype=torch.int32)
    feats = torch.randn(4, 2, generator=g, dtype=torch.float64)
    kernel = torch.randn(8, 2, 3, generator=g, dtype=torch.float64)
    out = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 1], [1, 0, 0, 0]], dtype=torch.int32)
    got = reference_conv(coords, feats, kernel, (2, 2, 2), (2, 2, 2), (0, 0, 0), out, 2)
    rows = {tuple(c.tolist()): i for i, c in enumerate(coords)}
    want = torch.zeros(3, 3, dtype=torch.float64)
    for j, o in enumerate(out.tolist()):
        for (dx, dy, dz), t in torchsparse_taps((2, 2, 2), (0, 0, 0)):
            i = rows.get((o[0], o[1] * 2 + dx, o[2] * 2 + dy, o[3] * 2 + dz))
            if i is not None:
                want[j] += feats[i] @ kernel[t]
    torch.testing.assert_close(got, want)
    assert want.abs().sum() > 0
