"""Kernel maps: which input row meets which output row through which weight.

A :class:`KernelMap` stores, for every kernel offset ``k``, the pairs
``(in_idx, out_idx)`` such that ``in_coord = out_coord * stride + offset_k``
(a transposed map swaps the roles). The pairs of all offsets live in two
concatenated arrays, grouped by offset, with ``counts[k]`` pairs for offset
``k``. This is the single interface between map building and compute; the
conv it belongs to is described by its :class:`ConvGeometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .columns import column_hits, plan_columns
from .geometry import MODES, ConvGeometry, triple
from .index import SortIndex, make_index
from .keys import COORD_BITS, MAX_COORD, check_coords, pack
from .outputs import check_bound, output_coords

__all__ = ["MODES", "KernelMap", "build_kernel_map", "build_map"]


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Compact map of one convolution.

    Attributes:
        in_idx: [M] int64 input rows, grouped by offset.
        out_idx: [M] int64 output rows, aligned with ``in_idx``.
        counts: pairs per offset, ``len(counts) == K``.
        in_coords: [n_in, 4] int32 input coordinates.
        out_coords: [n_out, 4] int32 output coordinates.
        geometry: the conv's :class:`ConvGeometry` (mode swapped on a
            transposed view).
        identity_offset: offset whose map is ``in_idx == out_idx == arange``
            (the centre tap of a submanifold conv), or None.
        symmetric: True when offset ``k``'s pairs are offset ``K-1-k``'s
            pairs swapped (submanifold conv with odd, centred kernel).
        in_shape, out_shape: spatial grid shapes when the conv is bounded.
        plans: what executors derive from this map and keep with it, by key:
            execution plans and their launch data (group indices, Triton
            descriptors, neighbour tables). A copy made by :meth:`to` or
            :meth:`transpose` starts empty.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    counts: tuple[int, ...]
    in_coords: torch.Tensor
    out_coords: torch.Tensor
    geometry: ConvGeometry
    identity_offset: int | None = None
    symmetric: bool = False
    in_shape: tuple[int, int, int] | None = None
    out_shape: tuple[int, int, int] | None = None
    plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    kernel_size = property(lambda self: self.geometry.kernel_size)
    stride = property(lambda self: self.geometry.stride)
    dilation = property(lambda self: self.geometry.dilation)
    padding = property(lambda self: self.geometry.padding)
    mode = property(lambda self: self.geometry.mode)

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
            geometry=self.geometry.transposed(),
            in_shape=self.out_shape,
            out_shape=self.in_shape,
        )

    def to(self, device: torch.device | str) -> KernelMap:
        return replace(
            self,
            in_idx=self.in_idx.to(device),
            out_idx=self.out_idx.to(device),
            in_coords=self.in_coords.to(device),
            out_coords=self.out_coords.to(device),
        )


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


@dataclass(frozen=True)
class _Queries:
    """What every offset's lookup shares: base keys per output and their per-axis range."""

    base: torch.Tensor  # [n_out, 4] int64 base coordinates (query order)
    base_keys: torch.Tensor  # [n_out] packed keys of ``base``
    shifts: torch.Tensor  # [K, 3] spatial shift added to ``base`` per offset
    residue: torch.Tensor | None  # [n_out, 3] o % s of a strided transposed map, else None
    row_of: torch.Tensor | None  # output row of each query when queried in key order
    self_queries: bool  # the queries are the index's own sorted keys (submanifold)
    lo: list[int]
    hi: list[int]
    hi_in: list[int]


def _queries(
    in_coords: torch.Tensor, out_coords: torch.Tensor, geom: ConvGeometry, offsets: torch.Tensor, index: object
) -> _Queries:
    """Stage 2: per-output base keys; for output ``o`` and offset ``d`` the input is ``o*s + d`` (conv)
    or ``(o - d) / s`` when divisible (transposed)."""
    device = in_coords.device
    s = torch.tensor(geom.stride, dtype=torch.int64, device=device)
    o = out_coords.to(torch.int64)
    residue = None
    if geom.mode == "transposed":
        base = torch.cat([o[:, :1], torch.div(o[:, 1:], s, rounding_mode="floor")], dim=1)
        if any(v > 1 for v in geom.stride):
            residue = o[:, 1:] % s
        shifts = -torch.div(offsets, s, rounding_mode="floor")
    else:
        base = torch.cat([o[:, :1], o[:, 1:] * s], dim=1)
        shifts = offsets
    n_out = base.shape[0]
    base_keys = pack(base) if n_out else torch.empty(0, dtype=torch.int64, device=device)
    row_of = None
    if geom.mode == "submanifold" and type(index) is SortIndex and not index.in_key_order:
        # Outputs are the inputs, whose keys the index holds sorted: querying
        # in key order makes every binary search walk the table sequentially
        # (cache-friendly) instead of jumping around it.
        row_of, base_keys, base = index.order, index.sorted_keys, base[index.order]
    lo = base[:, 1:].amin(0).tolist() if n_out else [0, 0, 0]
    hi = base[:, 1:].amax(0).tolist() if n_out else [0, 0, 0]
    hi_in = in_coords[:, 1:].amax(0).tolist() if in_coords.shape[0] else [0, 0, 0]
    self_queries = geom.mode == "submanifold" and type(index) is SortIndex
    return _Queries(base, base_keys, shifts, residue, row_of, self_queries, lo, hi, hi_in)


def _offset_pairs(
    q: _Queries, index: object, k: int, offsets: torch.Tensor, stride: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 3: (input rows, output rows) of offset ``k``, sorted by output row."""
    keys = q.base_keys + _packed_shift(q.shifts[k])
    ok = _in_range_mask(q.base[:, 1:], q.lo, q.hi, q.hi_in, q.shifts[k])
    if q.residue is not None:
        s = torch.tensor(stride, dtype=torch.int64, device=keys.device)
        fits = (q.residue == offsets[k] % s).all(dim=1)
        ok = fits if ok is None else ok & fits
    if ok is not None:
        keys = torch.where(ok, keys, -1)
    hit, found = index.lookup(keys)
    if q.row_of is None:
        return found, hit
    out_rows, by_row = torch.sort(q.row_of[hit])
    return found[by_row], out_rows


def _searched_taps(geom: ConvGeometry, offsets: torch.Tensor) -> tuple[list[int], int | None]:
    """Taps whose pairs are searched, and the centre tap of a symmetric map (None otherwise).

    A symmetric map searches one tap of every mirror pair ``(d, -d)``, chosen
    column-wise (``(dx, dy) > (0, 0)``, or ``dz < 0`` on the centre column) so
    that whole kernel columns go through one column search.
    """
    volume = offsets.shape[0]
    if not geom.symmetric:
        return list(range(volume)), None
    centre = volume // 2
    rows = enumerate(offsets.tolist())
    return [k for k, (dx, dy, dz) in rows if (dx, dy) > (0, 0) or ((dx, dy) == (0, 0) and dz < 0)], centre


def _rows(q: _Queries, index: SortIndex, qpos: torch.Tensor, spos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input rows, output rows) of the hits at query positions ``qpos`` / sorted positions ``spos``."""
    found = index.order[spos]
    if q.row_of is None:
        return found, qpos
    out_rows, by_row = torch.sort(q.row_of[qpos])
    return found[by_row], out_rows


def _column_pairs(q: _Queries, index: SortIndex, plan: list, ins: list, outs: list) -> None:
    """Fill ``ins``/``outs`` for every tap of ``plan`` with one search per kernel column."""
    n = q.base_keys.shape[0]
    for dx, dy, members in plan:
        dz_min = members[0][1]
        targets = q.base_keys + _packed_shift(torch.tensor([dx, dy, dz_min]))
        slack = 0
        if q.self_queries and dx == 0 and dy == 0 and members[-1][1] < 0:
            # Queries are the sorted keys themselves: keys below key i sit
            # below slot i, so no search is needed on the centre column.
            slack = -dz_min
            positions = (torch.arange(n, device=targets.device) + dz_min).clamp_(min=0)
        else:
            positions = index.lower_bound(targets)
        found = column_hits(index.sorted_keys, positions, targets, [dz - dz_min for _, dz in members], slack)
        for (k, _), spos in zip(members, found):
            ok = spos >= 0
            mask = _in_range_mask(q.base[:, 1:], q.lo, q.hi, q.hi_in, q.shifts[k])
            if mask is not None:
                ok &= mask
            qpos = torch.nonzero(ok).squeeze(1)
            ins[k], outs[k] = _rows(q, index, qpos, spos[qpos])


def _all_pairs(
    q: _Queries, index: object, geom: ConvGeometry, offsets: torch.Tensor, n_out: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], int | None]:
    """Stage 3 over every offset; a symmetric map searches only half the taps and mirrors the rest."""
    device = q.base.device
    volume = offsets.shape[0]
    taps, centre = _searched_taps(geom, offsets)
    empty = torch.empty(0, dtype=torch.int64, device=device)
    ins: list[torch.Tensor] = [empty] * volume
    outs: list[torch.Tensor] = [empty] * volume
    if centre is not None:
        ins[centre] = outs[centre] = torch.arange(n_out, device=device)
    plan = None
    if q.residue is None and type(index) is SortIndex and index.sorted_keys.numel() and n_out:
        plan = plan_columns(q.shifts, taps)  # the shifts, not the offsets: a transposed map negates them
    if plan is not None:
        _column_pairs(q, index, plan, ins, outs)
    else:
        for k in taps:
            ins[k], outs[k] = _offset_pairs(q, index, k, offsets, geom.stride)
    if centre is not None:
        # Offset k is -(offset K-1-k): the same pairs with the roles swapped,
        # re-sorted by output row so scatters walk the output in order.
        searched = set(taps) | {centre}
        for k in range(volume):
            if k in searched:
                continue
            mirror_in, mirror_out = ins[volume - 1 - k], outs[volume - 1 - k]
            if mirror_in.numel() < 2 or bool((mirror_in[1:] >= mirror_in[:-1]).all()):
                ins[k], outs[k] = mirror_out, mirror_in  # already in output order (inputs in key order)
            else:
                order = torch.argsort(mirror_in)
                ins[k], outs[k] = mirror_out[order], mirror_in[order]
    return ins, outs, centre


def build_map(
    in_coords: torch.Tensor,
    geometry: ConvGeometry,
    *,
    out_coords: torch.Tensor | None = None,
    builder: str = "auto",
) -> KernelMap:
    """Build the kernel map of the conv described by ``geometry`` over ``in_coords``.

    Stages: validate, compute the output coordinates (unless given), index the
    input keys, derive per-output base keys, look every offset up.

    Args:
        in_coords: [N, 4] integer (batch, x, y, z), unique, in [0, MAX_COORD]
            (and inside ``geometry.bound`` when it is set).
        geometry: kernel, stride, dilation, padding, mode, output rule, bound.
        out_coords: [M, 4] output coordinates to use instead of computing them.
        builder: ``"hash"``, ``"sort"`` or ``"auto"``; all give the identical map.

    Returns:
        The :class:`KernelMap`; pairs of each offset are sorted by output row.
    """
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"geometry must be a ConvGeometry, got {type(geometry).__name__}")
    in_coords = check_coords(in_coords, "in_coords")
    check_bound(in_coords, geometry.bound, "in_coords")
    if out_coords is not None:
        out_coords = check_coords(out_coords, "out_coords")
        if out_coords.device != in_coords.device:
            raise ValueError(f"out_coords is on {out_coords.device} but in_coords on {in_coords.device}")
    offsets = geometry.offsets(in_coords.device)
    if out_coords is None:
        out_coords = output_coords(in_coords, geometry, offsets)
    index = make_index(pack(in_coords), builder, "coords")
    q = _queries(in_coords, out_coords, geometry, offsets, index)
    ins, outs, centre = _all_pairs(q, index, geometry, offsets, out_coords.shape[0])
    return KernelMap(
        in_idx=torch.cat(ins),
        out_idx=torch.cat(outs),
        counts=tuple(int(t.numel()) for t in ins),
        in_coords=in_coords,
        out_coords=out_coords,
        geometry=geometry,
        identity_offset=centre,
        symmetric=centre is not None,
        in_shape=geometry.bound,
        out_shape=geometry.out_shape,
    )


def build_kernel_map(
    in_coords: torch.Tensor,
    kernel_size: int | tuple[int, int, int],
    stride: int | tuple[int, int, int] = (1, 1, 1),
    dilation: int | tuple[int, int, int] = (1, 1, 1),
    *,
    mode: str = "submanifold",
    padding: int | tuple[int, int, int] | None = None,
    bound: int | tuple[int, int, int] | None = None,
    out_coords: torch.Tensor | None = None,
    builder: str = "auto",
    downsample_mode: str = "spconv",
) -> KernelMap:
    """Build the kernel map of one convolution (keyword form of :func:`build_map`).

    Args:
        in_coords: [N, 4] integer (batch, x, y, z), unique, in [0, MAX_COORD].
        kernel_size, stride, dilation: ints or 3-tuples of positive ints.
        mode: ``"submanifold"`` (stride must be 1), ``"conv"`` or ``"transposed"``.
        padding: per-axis padding of the equivalent dense conv (taps at
            ``k * dilation - padding``); None = ``d * (k // 2)`` for odd k, 0 for even k.
        bound: spatial shape of the input grid; outputs outside the dense conv's
            output shape are dropped (None: unbounded).
        out_coords: [M, 4] output coordinates to use instead of computing
            them (e.g. the finer coordinates of a transposed conv).
        builder: ``"hash"``, ``"sort"`` or ``"auto"``; all give the identical map.
        downsample_mode: ``"spconv"`` or ``"minkowski"`` (strided conv outputs).
    """
    geometry = ConvGeometry(
        triple(kernel_size, "kernel_size"), triple(stride, "stride"), triple(dilation, "dilation"),
        padding, mode, downsample_mode, bound,
    )  # fmt: skip
    return build_map(in_coords, geometry, out_coords=out_coords, builder=builder)
