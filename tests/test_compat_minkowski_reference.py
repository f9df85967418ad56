"""A brute-force MinkowskiEngine reference built from ME 0.5.4's documented kernel rules, and its own checks.

Nothing here uses torchsparse_lite: every output is a sum over explicit
(input row, output row, tap) triples found by dictionary look-ups of ME
coordinates (original voxel units, signed):

* tap ``k`` has x index ``k % kx``, y ``(k // kx) % ky``, z ``k // (kx ky)``
  (``kernel_region::coordinate_at``); on an axis of size ``K`` index ``i``
  sits at ``(i - K // 2) * d * t`` for odd ``K`` and ``i * d * t`` for even
  ``K``, ``t`` the tensor stride of the finer side;
* conv: ``out[o] += x[o + offset_k] @ W[k]``; transposed conv:
  ``out[o + offset_k] += x[o] @ W[k]``;
* strided outputs: ``unique(floor(c / T) * T)``;
* pooling with ``kernel_size == stride``: every input joins ``floor(c / T) * T``.

The checks below pin the reference itself to ``F.conv3d`` /
``F.conv_transpose3d`` on densified grids.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def me_offsets(kernel_size: int, dilation: int, tensor_stride: int) -> list[tuple[int, int, int]]:
    """ME's tap offsets of a cubic kernel, x fastest."""
    axis = [((i - kernel_size // 2) if kernel_size % 2 else i) * dilation * tensor_stride for i in range(kernel_size)]
    return [(x, y, z) for z, y, x in itertools.product(axis, axis, axis)]


def strided_coords(coords: torch.Tensor, out_stride: int) -> torch.Tensor:
    """Sorted ``unique(floor(c / T) * T)`` (batch column kept)."""
    c = coords.long().clone()
    c[:, 1:] = torch.div(c[:, 1:], out_stride, rounding_mode="floor") * out_stride
    return torch.unique(c, dim=0).int()


def _rows(coords: torch.Tensor) -> dict[tuple[int, ...], int]:
    return {tuple(r): i for i, r in enumerate(coords.tolist())}


def _pairs(src: torch.Tensor, dst: torch.Tensor, offsets, sign: int) -> list[tuple[list[int], list[int]]]:
    """Per tap, rows (i, j) with ``dst[j] == src[i] + sign * offset`` (batch equal)."""
    where = _rows(dst)
    out = []
    for off in offsets:
        ins, outs = [], []
        for i, (b, x, y, z) in enumerate(src.tolist()):
            j = where.get((b, x + sign * off[0], y + sign * off[1], z + sign * off[2]))
            if j is not None:
                ins.append(i)
                outs.append(j)
        out.append((ins, outs))
    return out


def _kernel3(kernel: torch.Tensor) -> torch.Tensor:
    return kernel[None] if kernel.dim() == 2 else kernel


def conv(in_c, in_f, kernel, out_c, kernel_size: int, dilation: int, in_stride: int) -> torch.Tensor:
    """ME conv: ``out[o] = sum_k x[o + offset_k] @ W[k]`` (offsets in units of the input's tensor stride)."""
    w = _kernel3(kernel)
    out = in_f.new_zeros(out_c.shape[0], w.shape[2])
    # From each output look for the input at o + offset: iterate outputs as the source.
    for k, (o_rows, i_rows) in enumerate(_pairs(out_c, in_c, me_offsets(kernel_size, dilation, in_stride), 1)):
        if o_rows:
            out = out.index_add(0, torch.tensor(o_rows), in_f[torch.tensor(i_rows)] @ w[k])
    return out


def conv_transpose(in_c, in_f, kernel, out_c, kernel_size: int, dilation: int, out_stride: int) -> torch.Tensor:
    """ME transposed conv: ``out[o + offset_k] += x[o] @ W[k]`` (offsets in units of the output's stride)."""
    w = _kernel3(kernel)
    out = in_f.new_zeros(out_c.shape[0], w.shape[2])
    for k, (i_rows, o_rows) in enumerate(_pairs(in_c, out_c, me_offsets(kernel_size, dilation, out_stride), 1)):
        if i_rows:
            out = out.index_add(0, torch.tensor(o_rows), in_f[torch.tensor(i_rows)] @ w[k])
    return out


def _reduce(in_f, groups: list[list[int]], mode: str) -> torch.Tensor:
    rows = []
    for g in groups:
        v = in_f[torch.tensor(g, dtype=torch.long)]
        rows.append({"sum": v.sum(0), "avg": v.mean(0), "max": v.amax(0)}[mode] if g else in_f.new_zeros(in_f.shape[1]))
    return torch.stack(rows)


def pool(in_c, in_f, out_c, kernel_size: int, stride: int, in_stride: int, mode: str) -> torch.Tensor:
    """ME local pooling (``sum``/``avg`` over the active inputs/``max``)."""
    groups: list[list[int]] = [[] for _ in range(out_c.shape[0])]
    if kernel_size == stride:
        where, t = _rows(out_c), stride * in_stride
        for i, (b, *xyz) in enumerate(in_c.tolist()):
            groups[where[(b, *[(v // t) * t for v in xyz])]].append(i)
    else:
        for o_rows, i_rows in _pairs(out_c, in_c, me_offsets(kernel_size, 1, in_stride), 1):
            for o, i in zip(o_rows, i_rows):
                groups[o].append(i)
    return _reduce(in_f, groups, mode)


def global_pool(in_c, in_f, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(coordinates ``[b, 0, 0, 0]`` per batch index, sorted; reduced features)."""
    batches = sorted(set(in_c[:, 0].tolist()))
    groups = [[i for i, b in enumerate(in_c[:, 0].tolist()) if b == bb] for bb in batches]
    coords = torch.tensor([[b, 0, 0, 0] for b in batches], dtype=torch.int32)
    return coords, _reduce(in_f, groups, mode)


def batch_norm(bn: torch.nn.BatchNorm1d, f: torch.Tensor) -> torch.Tensor:
    """Eval-mode batch norm with the module's statistics and affine parameters."""
    return F.batch_norm(f, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def random_me_coords(n: int, lo: int, hi: int, batch: int, seed: int, step: int = 1) -> torch.Tensor:
    """Unique random ME coordinates (multiples of ``step``) in [lo, hi) over ``batch`` samples, shuffled."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, batch, (n, 1), generator=g)
    xyz = torch.randint(lo // step, hi // step, (n, 3), generator=g) * step
    c = torch.unique(torch.cat([b, xyz], 1), dim=0)
    return c[torch.randperm(c.shape[0], generator=g)].int()


# ---------------------------------------------------------------- checks of the reference itself
def _dense_weight(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """[K, Cin, Cout] (x fastest) -> [Cout, Cin, kx, ky, kz]."""
    return kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2]).permute(4, 3, 2, 1, 0)


def _densify(c: torch.Tensor, f: torch.Tensor, size: int) -> torch.Tensor:
    grid = f.new_zeros(int(c[:, 0].max()) + 1, f.shape[1], size, size, size)
    cl = c.long()
    grid[cl[:, 0], :, cl[:, 1], cl[:, 2], cl[:, 3]] = f
    return grid


def _read(grid: torch.Tensor, c: torch.Tensor, scale: int) -> torch.Tensor:
    cl = c.long()
    return grid[cl[:, 0], :, cl[:, 1] // scale, cl[:, 2] // scale, cl[:, 3] // scale]


def test_reference_submanifold_odd_kernel_matches_conv3d():
    c = random_me_coords(120, 0, 9, 2, seed=1)
    f = torch.randn(c.shape[0], 2, dtype=torch.float64)
    w = torch.randn(27, 2, 3, dtype=torch.float64)
    dense = F.conv3d(_densify(c, f, 9), _dense_weight(w, 3), padding=1)
    torch.testing.assert_close(conv(c, f, w, c, 3, 1, 1), _read(dense, c, 1))


def test_reference_even_strided_and_transposed_match_dense():
    c = random_me_coords(120, 0, 8, 2, seed=2)
    f = torch.randn(c.shape[0], 2, dtype=torch.float64)
    w = torch.randn(8, 2, 3, dtype=torch.float64)
    out_c = strided_coords(c, 2)
    dense = F.conv3d(_densify(c, f, 8), _dense_weight(w, 2), stride=2)
    torch.testing.assert_close(conv(c, f, w, out_c, 2, 1, 1), _read(dense, out_c, 2))
    g = torch.randn(out_c.shape[0], 3, dtype=torch.float64)
    wt = torch.randn(8, 3, 2, dtype=torch.float64)
    coarse = _densify(out_c // torch.tensor([1, 2, 2, 2], dtype=torch.int32), g, 4)
    up = F.conv_transpose3d(coarse, _dense_weight(wt, 2).transpose(0, 1), stride=2)
    torch.testing.assert_close(conv_transpose(out_c, g, wt, c, 2, 1, 1), _read(up, c, 1))


def test_reference_strided_odd_kernel_is_centred():
    # A k=3 s=2 conv of ME reads inputs o - t .. o + t around each output o = floor(c / 2) * 2.
    c = random_me_coords(100, 0, 10, 1, seed=3)
    f = torch.randn(c.shape[0], 1, dtype=torch.float64)
    w = torch.randn(27, 1, 1, dtype=torch.float64)
    out_c = strided_coords(c, 2)
    dense = F.conv3d(_densify(c, f, 12), _dense_weight(w, 3), stride=2, padding=1)
    torch.testing.assert_close(conv(c, f, w, out_c, 3, 1, 1), _read(dense, out_c, 2))
