"""Every (input, output, tap) triple of a strided or generative conv, enumerated from the inputs; its map by one sort.

In a conv (spconv's output rule) output ``o`` is active when some input sits
at ``c = o * s + d`` for a tap offset ``d``, and in a generative transposed
conv every ``o = c * s + d`` inside the grid is an output. Either way each
*candidate* ``(c, o, d)`` that the inputs produce is a pair of the map, and
the outputs are exactly the distinct candidate ``o``. So instead of indexing
the inputs and searching every tap of every output (:mod:`.pairs`, which the
hash builder and submanifold maps keep), the map comes from the candidates:

1. per axis, the few outputs an input reaches (:func:`_axis`): for a conv
   only the taps ``d ≡ c (mod s)`` divide exactly (at most ``ceil(k / s)``
   of them: 2 of 3 for a k3 s2 conv, 1 for k2 s2), for a transposed conv
   all ``k``; the candidates are the product of the three axes;
2. one sort of the candidate keys (:func:`~.numpy_ops.unique_inverse`, NumPy's
   SIMD sort on the CPU) gives the output coordinates in key order and each
   candidate's output row;
3. one stable sort of the tap numbers (a radix sort) groups the pairs by tap.

For a fixed tap, ``c -> o`` is strictly increasing in key order, so when the
inputs come in key order (as ``sparse_quantize`` and every strided output
give them) each tap's pairs are already sorted by output row; otherwise they
are sorted by (tap, output row) once. The map is identical to the searched
one. MinkUNet's and SECOND's k2 s2 down-sampling (one candidate per input)
and the k3 s2 convs of SECOND-style backbones (3.4 per input on average
instead of 27 searched taps) both take this path.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import torch

from .geometry import ConvGeometry
from .keys import COORD_BITS, MAX_COORD, unpack
from .numpy_ops import flat_nonzero, sort_distinct, stable_argsort, unique_inverse, unique_keys


def enumerates(geometry: ConvGeometry) -> bool:
    """True when the outputs of ``geometry`` are its candidates' (spconv rule, tiling windows, or generative)."""
    if geometry.mode == "conv":
        return geometry.downsample_mode == "spconv" or geometry.tiles
    return geometry.mode == "transposed"


@dataclass(frozen=True)
class _Slots:
    """The candidate tables of a geometry: per slot ``j`` (a tap per axis) and residue class ``r`` of the input.

    An input ``c`` has a base ``q`` per axis (``c // s`` for a conv, ``c * s``
    for a transposed conv) and a residue class ``r`` (``c % s`` per axis,
    flattened; always 0 for a transposed conv). Its candidate in slot ``j`` is
    ``q + delta[a][r, j]`` on axis ``a``, with packed key ``key(q) +
    key_shift[r, j]`` (the packing is linear), tap ``tap[r, j]``, present where
    ``ok[r, j]``. Residue-major, so a row gather by residue class gives every
    input its slots ([N, S]; a gather along the slot dimension is 8x slower).
    """

    divides: bool  # conv (q = c // s) or transposed (q = c * s)
    residues: tuple[int, int, int]  # residue classes per axis (s for a conv, 1 for a transposed conv)
    ok: torch.Tensor  # [R, S] bool
    key_shift: torch.Tensor  # [R, S] int64
    tap: torch.Tensor  # [R, S] int16 (int64 past 32,767 taps), into geometry.offsets()
    delta: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # per axis [R, S] int64
    span: tuple[tuple[int, int], ...]  # per axis (min, max) of delta over the present slots


def _axis_slots(geometry: ConvGeometry, axis: int) -> list[list[tuple[int, int] | None]]:
    """``[slot][residue] -> (delta, tap index on the axis)`` or None, on one axis.

    A conv reaches ``(c - d) / s`` only through taps ``d ≡ c (mod s)``: with
    ``c = q s + r`` and ``d = m s + r`` that is ``q - m``; slot ``j`` of
    residue ``r`` holds the ``j``-th such tap. A transposed conv reaches
    ``c s + d`` through every tap.
    """
    k, s = geometry.kernel_size[axis], geometry.stride[axis]
    d = [i * geometry.dilation[axis] - geometry.padding[axis] for i in range(k)]  # type: ignore[index]
    if geometry.mode == "transposed":
        return [[(d[i], i)] for i in range(k)]
    by_residue = [[i for i in range(k) if d[i] % s == r] for r in range(s)]
    width = max(len(v) for v in by_residue)
    return [[((r - d[v[j]]) // s, v[j]) if j < len(v) else None for r, v in enumerate(by_residue)]
            for j in range(width)]  # fmt: skip


@lru_cache(maxsize=128)
def _slots(geometry: ConvGeometry) -> _Slots:
    """The tables of :class:`_Slots` for ``geometry`` (CPU tensors; geometries are hashable)."""
    axes = [_axis_slots(geometry, a) for a in range(3)]
    (wx, wy, wz), (rx, ry, rz) = (len(t) for t in axes), tuple(len(t[0]) for t in axes)
    kx, ky = geometry.kernel_size[0], geometry.kernel_size[1]
    number = {k: j for j, k in enumerate(geometry.offsets_subset)} if geometry.offsets_subset else None
    n_res, n_slots = rx * ry * rz, wx * wy * wz
    ok = [[False] * n_slots for _ in range(n_res)]
    shift, tap = [[0] * n_slots for _ in range(n_res)], [[0] * n_slots for _ in range(n_res)]
    delta = [[[0] * n_slots for _ in range(n_res)] for _ in range(3)]
    # Slots and residue classes flattened x fastest (as _bases flattens the residues).
    for j, (jz, jy, jx) in enumerate(itertools.product(range(wz), range(wy), range(wx))):
        for r, (r_z, r_y, r_x) in enumerate(itertools.product(range(rz), range(ry), range(rx))):
            cells = (axes[0][jx][r_x], axes[1][jy][r_y], axes[2][jz][r_z])
            if None in cells:
                continue
            full = cells[0][1] + kx * (cells[1][1] + ky * cells[2][1])  # type: ignore[index]
            k = full if number is None else number.get(full)
            if k is None:  # a tap outside the kernel's subset
                continue
            ok[r][j], tap[r][j] = True, k
            for a, (dv, _) in enumerate(cells):  # type: ignore[misc]
                delta[a][r][j] = dv
            shift[r][j] = (delta[0][r][j] << (2 * COORD_BITS)) + (delta[1][r][j] << COORD_BITS) + delta[2][r][j]
    ok_t, deltas = torch.tensor(ok), tuple(torch.tensor(v) for v in delta)
    span = tuple((int(v[ok_t].min()), int(v[ok_t].max())) if bool(ok_t.any()) else (0, 0) for v in deltas)
    taps = torch.tensor(tap, dtype=torch.int16 if geometry.volume < (1 << 15) else torch.int64)  # a faster radix sort
    return _Slots(geometry.mode == "conv", (rx, ry, rz), ok_t, torch.tensor(shift), taps, deltas, span)


def _bases(c: torch.Tensor, slots: _Slots, geometry: ConvGeometry) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per axis the base ``q`` [N] of every input, and its flattened residue class [N]."""
    q, rc, scale = [], torch.zeros_like(c[:, 0]), 1
    for a in range(3):
        s, v = geometry.stride[a], c[:, 1 + a]
        if s == 1:
            q.append(v)
        elif not slots.divides:
            q.append(v * s)
        elif s & (s - 1) == 0:  # a power of two: shifts, not integer divisions
            q.append(v >> (s.bit_length() - 1))
            rc += (v & (s - 1)) * scale
        else:
            q.append(torch.div(v, s, rounding_mode="floor"))
            rc += (v % s) * scale
        scale *= slots.residues[a]
    return q, rc


def candidates(in_coords: torch.Tensor, geometry: ConvGeometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(keys [M] int64, input rows [M] int64, taps [M] int16)`` of every pair of ``geometry`` (:func:`enumerates`).

    Args:
        in_coords: [N, 4] integer (batch, x, y, z), range-checked.
        geometry: a ``"conv"`` (spconv rule or tiling) or ``"transposed"`` geometry.

    Returns:
        The packed output key, the input row and the tap number (into
        ``geometry.offsets()``) of each pair; a tap's pairs come in input-row order.
    """
    if not enumerates(geometry):
        raise ValueError(f"candidates: the outputs of {geometry} are not the candidates of its inputs")
    slots, dev = _slots(geometry), in_coords.device
    c = in_coords.to(torch.int64)
    n = c.shape[0]
    q, rc = _bases(c, slots, geometry)
    # [N, S]: each input's slots, one row gather of each table by residue class.
    valid = slots.ok.to(dev).index_select(0, rc)
    base = (c[:, 0] << (3 * COORD_BITS)) + (q[0] << (2 * COORD_BITS)) + (q[1] << COORD_BITS) + q[2]
    keys = slots.key_shift.to(dev).index_select(0, rc).add_(base[:, None])
    if n:
        _keep_inside(q, rc, slots, geometry, valid)
    sel = flat_nonzero(valid)
    width = valid.shape[1]
    if width & (width - 1) == 0:
        rows = sel >> (width.bit_length() - 1)
    else:
        rows = torch.div(sel, width, rounding_mode="floor")
    taps = slots.tap.to(dev).index_select(0, rc).reshape(-1).index_select(0, sel)
    return keys.reshape(-1).index_select(0, sel), rows, taps


def _keep_inside(q: list[torch.Tensor], rc: torch.Tensor, slots: _Slots, geometry: ConvGeometry,
                 valid: torch.Tensor) -> None:  # fmt: skip
    """Clear ``valid`` [N, S] where a candidate leaves the output grid; raise past the key range.

    Bounds from the per-axis ranges of ``q`` and of the slot deltas decide
    which axes can leave the grid at all; only those are checked per candidate.
    """
    out_shape = geometry.out_shape
    for a in range(3):
        lo, hi = (int(v) for v in torch.aminmax(q[a]))
        (d_lo, d_hi), upper = slots.span[a], None if out_shape is None else out_shape[a]
        reach = hi + d_hi
        if lo + d_lo >= 0 and (upper is None or reach < upper) and reach <= MAX_COORD:
            continue
        o = slots.delta[a].to(q[a].device).index_select(0, rc).add_(q[a][:, None])
        valid &= o >= 0
        if upper is not None:
            valid &= o < upper
        if reach > MAX_COORD and bool((valid & (o > MAX_COORD)).any()):
            raise ValueError(
                f"the input coords would give output coordinates beyond {MAX_COORD} on axis {'xyz'[a]}, the "
                "most the key packing holds; crop the scene or use a larger voxel size"
            )


def output_keys(in_coords: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """The distinct output keys of ``geometry`` over ``in_coords``, ascending."""
    return unique_keys(candidates(in_coords, geometry)[0])


def enumerated_map(
    in_coords: torch.Tensor, geometry: ConvGeometry
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """``(out_coords, in_idx, out_idx, counts)`` of ``geometry`` (see :func:`enumerates`) over [N, 4] ``in_coords``.

    Returns:
        out_coords [M, 4] int32 sorted by key (as :func:`.outputs.output_coords`
        gives them), the pairs grouped by tap in ``geometry.offsets()`` order,
        each tap's sorted by output row, and the pairs per tap.
    """
    keys, rows, taps = candidates(in_coords, geometry)
    out_keys, out_row, _ = unique_inverse(keys)
    by_tap = stable_argsort(taps)
    in_idx, out_idx = rows.index_select(0, by_tap), out_row.index_select(0, by_tap)
    counts = torch.bincount(taps, minlength=geometry.volume)
    if out_idx.numel() > 1:
        # Within a tap the pairs follow the input rows (one slot per tap); they
        # follow the output rows too unless the inputs are out of key order.
        step = out_idx[1:] <= out_idx[:-1]
        starts = torch.cumsum(counts, 0)[:-1]
        starts = starts[(starts > 0) & (starts < out_idx.numel())]
        step[starts - 1] = False  # the first pair of a tap may lie below the last of the one before
        if bool(step.any()):
            _, order = sort_distinct(taps.to(torch.int64) * out_keys.numel() + out_row)
            in_idx, out_idx = rows.index_select(0, order), out_row.index_select(0, order)
    return unpack(out_keys), in_idx, out_idx, tuple(counts.tolist())
