"""Kernel maps: which input row meets which output row through which weight.

A :class:`KernelMap` stores, for every kernel offset ``k``, the pairs
``(in_idx, out_idx)`` such that ``in_coord = out_coord * stride + offset_k``
(a transposed map swaps the roles). The pairs of all offsets live in two
concatenated arrays, grouped by offset, with ``counts[k]`` pairs for offset
``k``. This is the single interface between map building and compute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..config import DOWNSAMPLE_MODES
from .index import SortIndex, lookup, make_index
from .keys import COORD_BITS, MAX_COORD, check_coords, pack, unpack
from .offsets import is_symmetric, kernel_offsets, triple

MODES = ("submanifold", "conv", "transposed")


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Compact map of one convolution.

    Attributes:
        in_idx: [M] int64 input rows, grouped by offset.
        out_idx: [M] int64 output rows, aligned with ``in_idx``.
        counts: pairs per offset, ``len(counts) == K``.
        in_coords: [n_in, 4] int32 input coordinates.
        out_coords: [n_out, 4] int32 output coordinates.
        kernel_size, stride, dilation: conv geometry.
        mode: ``"submanifold"``, ``"conv"`` or ``"transposed"``.
        identity_offset: offset whose map is ``in_idx == out_idx == arange``
            (the centre tap of a submanifold conv), or None.
        symmetric: True when offset ``k``'s pairs are offset ``K-1-k``'s
            pairs swapped (submanifold conv with odd kernel).
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    counts: tuple[int, ...]
    in_coords: torch.Tensor
    out_coords: torch.Tensor
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    mode: str
    identity_offset: int | None = None
    symmetric: bool = False

    @property
    def n_in(self) -> int:
        return int(self.in_coords.shape[0])

    @property
    def n_out(self) -> int:
        return int(self.out_coords.shape[0])

    @property
    def volume(self) -> int:
        return len(self.counts)

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """[(start, end)] of each offset's pairs in ``in_idx``/``out_idx``."""
        out, start = [], 0
        for c in self.counts:
            out.append((start, start + c))
            start += c
        return out

    def transpose(self) -> KernelMap:
        """The map with inputs and outputs swapped (used by transposed convs and backward)."""
        return replace(
            self,
            in_idx=self.out_idx,
            out_idx=self.in_idx,
            in_coords=self.out_coords,
            out_coords=self.in_coords,
            mode="transposed" if self.mode == "conv" else ("conv" if self.mode == "transposed" else self.mode),
        )

    def to(self, device: torch.device | str) -> KernelMap:
        return replace(
            self,
            in_idx=self.in_idx.to(device),
            out_idx=self.out_idx.to(device),
            in_coords=self.in_coords.to(device),
            out_coords=self.out_coords.to(device),
        )


def _unique_coords(batch: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    """Unique (batch, spatial) rows with spatial >= 0, sorted by packed key.

    Negative outputs lie outside the dense conv's grid and are dropped; outputs
    beyond ``MAX_COORD`` cannot be packed and raise.
    """
    keep = (spatial >= 0).all(dim=1)
    batch, spatial = batch[keep], spatial[keep]
    if spatial.numel() and int(spatial.max()) > MAX_COORD:
        raise ValueError(
            f"the input coords would give output coordinates up to {spatial.amax(0).tolist()}, beyond "
            f"{MAX_COORD}, the most the key packing holds; crop the scene or use a larger voxel size"
        )
    return unpack(torch.unique(pack(torch.cat([batch[:, None], spatial], dim=1))))


def output_coords(
    in_coords: torch.Tensor,
    offsets: torch.Tensor,
    stride: tuple[int, int, int],
    mode: str,
    downsample_mode: str = "spconv",
) -> torch.Tensor:
    """Output coordinates of a conv over ``in_coords``.

    * submanifold: the inputs themselves.
    * conv, ``"spconv"``: every ``o >= 0`` on the output grid with an input
      at ``o * stride + offset`` for some offset (a dense ``conv3d`` with
      padding ``k // 2`` restricted to its active outputs).
    * conv, ``"minkowski"``: unique ``c // stride``.
    * transposed (no cached down-sampling map): every ``c = o * stride + offset >= 0``.

    Returns:
        [n_out, 4] int32, sorted by (batch, x, y, z) except for submanifold.
    """
    if mode == "submanifold":
        return in_coords
    c = in_coords.to(torch.int64)
    b, xyz = c[:, 0], c[:, 1:]
    s = torch.tensor(stride, dtype=torch.int64, device=c.device)
    if mode == "conv" and (downsample_mode == "minkowski" or _windows_tile(offsets, stride)):
        # Minkowski's rule; also the spconv rule whenever the windows tile the
        # grid (kernel == stride, no padding or dilation, as in MinkUNet's
        # down-sampling): each input then lies in exactly one window.
        return _unique_coords(b, torch.div(xyz, s, rounding_mode="floor"))
    if mode == "conv":
        return _strided_outputs(b, xyz, offsets, stride)
    k = offsets.shape[0]
    shifted = (xyz[None] * s + offsets[:, None]).reshape(-1, 3)
    return _unique_coords(b.repeat(k), shifted)


def _strided_outputs(
    batch: torch.Tensor, xyz: torch.Tensor, offsets: torch.Tensor, stride: tuple[int, int, int]
) -> torch.Tensor:
    """Outputs ``o = (c - d) / s`` over offsets ``d`` where the division is exact.

    The offsets form a grid, so the candidates are a product of per-axis
    choices: on each axis only the offsets congruent to ``c`` modulo ``s``
    qualify (at most ``ceil(k / s)`` of them), which yields a few candidates
    per input instead of one per kernel tap.
    """
    per_axis, masks = [], []
    for a in range(3):
        s = stride[a]
        axis_offsets = torch.unique(offsets[:, a]).tolist()
        by_residue = [[d for d in axis_offsets if d % s == r] for r in range(s)]
        width = max(len(v) for v in by_residue)
        table = torch.tensor([v + [0] * (width - len(v)) for v in by_residue], dtype=torch.int64)
        valid = torch.tensor([[i < len(v) for i in range(width)] for v in by_residue])
        r = xyz[:, a] % s
        cand = torch.div(xyz[:, a, None] - table.to(xyz.device)[r], s, rounding_mode="floor")
        per_axis.append(cand)
        masks.append(valid.to(xyz.device)[r] & (cand >= 0))
    n = xyz.shape[0]
    mx, my, mz = (t.shape[1] for t in per_axis)
    shape = (n, mx, my, mz)
    grid = torch.stack(
        [
            per_axis[0][:, :, None, None].expand(shape),
            per_axis[1][:, None, :, None].expand(shape),
            per_axis[2][:, None, None, :].expand(shape),
        ],
        dim=-1,
    ).reshape(-1, 3)
    keep = (masks[0][:, :, None, None] & masks[1][:, None, :, None] & masks[2][:, None, None, :]).reshape(-1)
    bb = batch[:, None].expand(n, mx * my * mz).reshape(-1)
    return _unique_coords(bb[keep], grid[keep])


def _windows_tile(offsets: torch.Tensor, stride: tuple[int, int, int]) -> bool:
    """True when the offsets on every axis are exactly 0, 1, ..., stride - 1."""
    return all(torch.unique(offsets[:, a]).tolist() == list(range(stride[a])) for a in range(3))


def _packed_shift(shift: torch.Tensor) -> int:
    """Key difference of a spatial shift (dx, dy, dz): packing is linear while fields stay in range."""
    dx, dy, dz = (int(v) for v in shift)
    return (dx << (2 * COORD_BITS)) + (dy << COORD_BITS) + dz


def _in_range_mask(
    base: torch.Tensor, lo: list[int], hi: list[int], hi_in: list[int], shift: torch.Tensor
) -> torch.Tensor | None:
    """Rows whose query key ``pack(base) + shift`` may be trusted; None when all may.

    The key arithmetic is exact while every field ``base + shift`` stays in
    [0, MAX_COORD]. A field that drops below 0 borrows from the field above and
    reads as ``65536 + base + shift``: it can only alias a stored coordinate
    when one lies within ``-shift`` of MAX_COORD (``hi_in`` is the stored
    per-axis maximum), so for ordinary scans no comparison is needed at all.
    Fields that pass MAX_COORD (``base = o * s`` itself may) are masked.
    """
    mask = None
    for axis in range(3):
        d = int(shift[axis])
        low_safe = lo[axis] + d >= 0 or hi_in[axis] - d <= MAX_COORD
        if low_safe and hi[axis] + d <= MAX_COORD:
            continue
        m = (base[:, axis] >= -d) & (base[:, axis] <= MAX_COORD - d)
        mask = m if mask is None else mask & m
    return mask


def build_kernel_map(
    in_coords: torch.Tensor,
    kernel_size: int | tuple[int, int, int],
    stride: int | tuple[int, int, int] = (1, 1, 1),
    dilation: int | tuple[int, int, int] = (1, 1, 1),
    *,
    mode: str = "submanifold",
    out_coords: torch.Tensor | None = None,
    builder: str = "auto",
    downsample_mode: str = "spconv",
) -> KernelMap:
    """Build the kernel map of one convolution.

    For output ``o`` and offset ``d`` the input looked up is ``o * s + d``
    (conv, submanifold) or ``(o - d) / s`` when divisible (transposed). Since
    the key packing is linear, every query key is one base key per output plus
    one constant per offset; only outputs near the coordinate range's edges
    need a range check.

    Args:
        in_coords: [N, 4] integer (batch, x, y, z), unique, in [0, MAX_COORD].
        kernel_size, stride, dilation: ints or 3-tuples of positive ints.
        mode: ``"submanifold"`` (stride must be 1), ``"conv"`` or ``"transposed"``.
        out_coords: [M, 4] output coordinates to use instead of computing
            them (e.g. the finer coordinates of a transposed conv).
        builder: ``"hash"``, ``"sort"`` or ``"auto"``; all give the identical map.
        downsample_mode: ``"spconv"`` or ``"minkowski"`` (strided conv outputs).

    Returns:
        The :class:`KernelMap`; pairs of each offset are sorted by output row.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if downsample_mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"downsample_mode must be one of {DOWNSAMPLE_MODES}, got {downsample_mode!r}")
    in_coords = check_coords(in_coords, "in_coords")
    if out_coords is not None:
        out_coords = check_coords(out_coords, "out_coords")
        if out_coords.device != in_coords.device:
            raise ValueError(f"out_coords is on {out_coords.device} but in_coords on {in_coords.device}")
    kernel_size = triple(kernel_size, "kernel_size")
    stride = triple(stride, "stride")
    dilation = triple(dilation, "dilation")
    if mode == "submanifold" and stride != (1, 1, 1):
        raise ValueError(f"a submanifold conv needs stride 1, got {stride}")
    device = in_coords.device
    offsets = kernel_offsets(kernel_size, dilation, device)
    if out_coords is None:
        out_coords = output_coords(in_coords, offsets, stride, mode, downsample_mode)
    index = make_index(pack(in_coords), builder, "coords")
    volume = offsets.shape[0]
    n_out = out_coords.shape[0]
    s = torch.tensor(stride, dtype=torch.int64, device=device)
    o = out_coords.to(torch.int64)
    symmetric = mode == "submanifold" and is_symmetric(kernel_size)
    centre = volume // 2 if symmetric else None
    if mode == "transposed":
        # (o - d) / s = o // s - ceil-free shift, valid when o % s == d % s.
        base = torch.cat([o[:, :1], torch.div(o[:, 1:], s, rounding_mode="floor")], dim=1)
        residue = o[:, 1:] % s
        shifts = -torch.div(offsets, s, rounding_mode="floor")
    else:
        base = torch.cat([o[:, :1], o[:, 1:] * s], dim=1)
        residue = None
        shifts = offsets
    base_keys = pack(base) if n_out else torch.empty(0, dtype=torch.int64, device=device)
    row_of = None
    if mode == "submanifold" and type(index) is SortIndex:
        # Outputs are the inputs, whose keys the index holds sorted: querying
        # in key order makes every binary search walk the table sequentially
        # (cache-friendly) instead of jumping around it.
        row_of, base_keys, base = index.order, index.sorted_keys, base[index.order]
    lo = base[:, 1:].amin(0).tolist() if n_out else [0, 0, 0]
    hi = base[:, 1:].amax(0).tolist() if n_out else [0, 0, 0]
    hi_in = in_coords[:, 1:].amax(0).tolist() if in_coords.shape[0] else [0, 0, 0]
    empty = torch.empty(0, dtype=torch.int64, device=device)
    ins: list[torch.Tensor] = [empty] * volume
    outs: list[torch.Tensor] = [empty] * volume
    for k in range(volume):
        if symmetric and k > centre:
            continue
        if k == centre:
            rows = torch.arange(n_out, device=device)
            ins[k], outs[k] = rows, rows
            continue
        keys = base_keys + _packed_shift(shifts[k])
        ok = _in_range_mask(base[:, 1:], lo, hi, hi_in, shifts[k])
        if residue is not None and any(v > 1 for v in stride):
            fits = (residue == offsets[k] % s).all(dim=1)
            ok = fits if ok is None else ok & fits
        if ok is not None:
            keys = torch.where(ok, keys, -1)
        hit, found = lookup(index, keys)
        if row_of is None:
            ins[k], outs[k] = found, hit
        else:
            out_rows, by_row = torch.sort(row_of[hit])
            ins[k], outs[k] = found[by_row], out_rows
    if symmetric:
        # Offset k is -(offset K-1-k): the same pairs with the roles swapped,
        # re-sorted by output row so scatters walk the output in order.
        for k in range(centre + 1, volume):
            mirror_in, mirror_out = ins[volume - 1 - k], outs[volume - 1 - k]
            order = torch.argsort(mirror_in)
            ins[k], outs[k] = mirror_out[order], mirror_in[order]
    return KernelMap(
        in_idx=torch.cat(ins),
        out_idx=torch.cat(outs),
        counts=tuple(int(t.numel()) for t in ins),
        in_coords=in_coords,
        out_coords=out_coords,
        kernel_size=kernel_size,
        stride=stride,
        dilation=dilation,
        mode=mode,
        identity_offset=centre,
        symmetric=symmetric,
    )
