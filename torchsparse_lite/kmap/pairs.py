"""The pair search of a kernel map: for every kernel offset, which input row meets which output row.

Stages (after the inputs are validated and the outputs known): index the
input keys, derive one base key per output (:func:`_queries`), then look
every offset up, either tap by tap or one binary search per kernel column
(:mod:`.columns`); a symmetric map searches half the taps and mirrors the
rest. :func:`map_pairs` runs them; :func:`~torchsparse_lite.kmap.kernel_map.build_map`
(eager) and the map-building custom ops (``torchsparse_lite.ops.maps``,
traced graphs) both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .columns import column_matches, plan_columns
from .geometry import ConvGeometry
from .index import SortIndex, make_index
from .keys import MAX_COORD, pack, shift_key
from .numpy_ops import flat_nonzero, sort_distinct

Pairs = tuple[torch.Tensor, torch.Tensor, tuple[int, ...], "int | None"]
"""(in_idx [M] int64, out_idx [M] int64, pairs per offset, identity offset or None)."""


def _packed_shift(shift: torch.Tensor) -> int:
    """Key difference of a spatial shift [3] (dx, dy, dz): packing is linear while fields stay in range."""
    return shift_key(*(int(v) for v in shift))


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


def _axis_range(coords: torch.Tensor) -> tuple[list[int], list[int]]:
    """Per-axis (min, max) of the x, y, z columns of [N, 4] ``coords`` (zeros when empty), in one pass."""
    if not coords.shape[0]:
        return [0, 0, 0], [0, 0, 0]
    lo, hi = torch.aminmax(coords[:, 1:], dim=0)
    return lo.tolist(), hi.tolist()


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
    elif any(v > 1 for v in geom.stride):
        base = torch.cat([o[:, :1], o[:, 1:] * s], dim=1)
        shifts = offsets
    else:
        base, shifts = o, offsets
    n_out = base.shape[0]
    # A submanifold map's outputs are its inputs (build_map refuses others).
    self_queries = geom.mode == "submanifold" and type(index) is SortIndex
    row_of = None
    if self_queries:
        # Outputs are the inputs, whose keys the index holds sorted: querying
        # in key order makes every binary search walk the table sequentially
        # (cache-friendly) instead of jumping around it.
        base_keys = index.sorted_keys
        if not index.in_key_order:
            row_of, base = index.order, base[index.order]
    else:
        base_keys = pack(base) if n_out else torch.empty(0, dtype=torch.int64, device=device)
    lo, hi = _axis_range(base)
    hi_in = hi if self_queries else _axis_range(in_coords)[1]
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
    out_rows, by_row = sort_distinct(q.row_of[hit])
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
    found = spos if index.in_key_order else index.order[spos]  # rows in key order are their own ranks
    if q.row_of is None:
        return found, qpos
    out_rows, by_row = sort_distinct(q.row_of[qpos])
    return found[by_row], out_rows


def _column_pairs(q: _Queries, index: SortIndex, plan: list, ins: list, outs: list) -> None:
    """Fill ``ins``/``outs`` for every tap of ``plan`` with one search per kernel column."""
    n = q.base_keys.shape[0]
    columns = []  # (members, targets, positions or None, slack)
    for dx, dy, members in plan:
        targets = q.base_keys + _packed_shift(torch.tensor([dx, dy, members[0][1]]))
        if q.self_queries and dx == 0 and dy == 0 and members[-1][1] < 0:
            # Queries are the sorted keys themselves: keys below key i sit
            # below slot i, so no search is needed on the centre column.
            slack = -members[0][1]
            columns.append((members, targets, (torch.arange(n, device=targets.device) - slack).clamp_(min=0), slack))
        else:
            columns.append((members, targets, None, 0))
    searched = iter(index.lower_bounds([t for _, t, p, _ in columns if p is None]))  # all searches at once
    for members, targets, positions, slack in columns:
        positions = next(searched) if positions is None else positions
        span = [dz - members[0][1] for _, dz in members]
        found = column_matches(index.padded_keys(max(span) + 1 + slack), positions, targets, span, slack)
        for (k, _), (qpos, spos) in zip(members, found):
            mask = _in_range_mask(q.base[:, 1:], q.lo, q.hi, q.hi_in, q.shifts[k])
            if mask is not None:
                keep = flat_nonzero(mask[qpos])
                qpos, spos = qpos[keep], spos[keep]
            ins[k], outs[k] = _rows(q, index, qpos, spos)


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
                _, order = sort_distinct(mirror_in)
                ins[k], outs[k] = mirror_out[order], mirror_in[order]
    return ins, outs, centre


def map_pairs(
    in_coords: torch.Tensor,
    out_coords: torch.Tensor,
    geometry: ConvGeometry,
    builder: str,
    offsets: torch.Tensor | None = None,
) -> Pairs:
    """The pairs of conv ``geometry`` from validated [N, 4] ``in_coords`` to [M, 4] ``out_coords``.

    ``offsets``: ``geometry.offsets()`` on the coordinates' device when already at hand.

    Returns:
        ``(in_idx, out_idx, counts, centre)``: pairs grouped by offset, each
        offset's sorted by output row; ``centre`` is the identity offset of a
        symmetric map (None otherwise).
    """
    if offsets is None:
        offsets = geometry.offsets(in_coords.device)
    index = make_index(pack(in_coords), builder, "coords")
    q = _queries(in_coords, out_coords, geometry, offsets, index)
    ins, outs, centre = _all_pairs(q, index, geometry, offsets, out_coords.shape[0])
    return torch.cat(ins), torch.cat(outs), tuple(int(t.numel()) for t in ins), centre
