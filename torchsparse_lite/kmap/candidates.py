"""Every (input, output, tap) triple of a strided or generative conv, enumerated from the inputs; its map by one sort.

In a conv (spconv's output rule) output ``o`` is active when some input sits
at ``c = o * s + d`` for a tap offset ``d``, and in a generative transposed
conv every ``o = c * s + d`` inside the grid is an output. Either way each
*candidate* ``(c, o, d)`` that the inputs produce is a pair of the map, and
the outputs are exactly the distinct candidate ``o``. So instead of indexing
the inputs and searching every tap of every output (:mod:`.pairs`, which
submanifold maps and the hash builder keep), the map comes from the candidates:

1. per axis, the few outputs an input reaches (:func:`_axis_slots`): for a
   conv only the taps ``d ≡ c (mod s)`` divide exactly (2 of 3 for a k3 s2
   conv, 1 for k2 s2; all of them when the dilation is a multiple of the
   stride), for a transposed conv all ``k``; the candidates are the product
   of the three axes, looked up in tables by the input's residue class;
2. one sort of the candidate keys (:func:`~.numpy_ops.unique_inverse`, NumPy's
   SIMD sort on the CPU) gives the output coordinates in key order and each
   candidate's output row;
3. one stable sort of the tap numbers (a radix sort of int16 taps) groups
   the pairs by tap.

For a fixed tap, ``c -> o`` is strictly increasing in key order, so when the
inputs come strictly in key order (as ``sparse_quantize`` and every strided
output give them) each tap's pairs are already sorted by output row;
otherwise they are sorted by (tap, output row) once, which also finds
duplicate inputs (one output reached twice through one tap). The map is
identical to the searched one. MinkUNet's and SECOND's k2 s2 down-sampling
(one candidate per input) and the k3 s2 convs of SECOND-style backbones (3.4
per input on average instead of 27 searched taps) take this path.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .geometry import ConvGeometry
from .keys import MAX_COORD, pack_fields, shift_key, unpack
from .numpy_ops import flat_nonzero, sort_distinct, stable_argsort, unique_inverse, unique_keys
from .protocol import duplicate_error

Int3 = tuple[int, int, int]


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

    transposed: bool  # q = c * s (else q = c // s)
    residues: tuple[int, int, int]  # residue classes per axis (s for a conv, 1 for a transposed conv)
    ok: torch.Tensor  # [R, S] bool
    full: bool  # every slot of every residue class holds a tap
    key_shift: torch.Tensor  # [R, S] int64
    tap: torch.Tensor  # [R, S] int16 (int64 from 32,768 taps on), into geometry.offsets()
    delta: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # per axis [R, S] int64
    span: tuple[tuple[int, int], ...]  # per axis (min, max) of delta over the present slots


def _axis_slots(transposed: bool, k: int, s: int, dilation: int, padding: int) -> list[list[tuple[int, int] | None]]:
    """``[slot][residue] -> (delta, tap index on the axis)`` or None, on one axis.

    A conv reaches ``(c - d) / s`` only through taps ``d ≡ c (mod s)``: with
    ``c = q s + r`` and ``d = m s + r`` that is ``q - m``; slot ``j`` of
    residue ``r`` holds the ``j``-th such tap. A transposed conv reaches
    ``c s + d`` through every tap.
    """
    d = [i * dilation - padding for i in range(k)]
    if transposed:
        return [[(d[i], i)] for i in range(k)]
    by_residue = [[i for i in range(k) if d[i] % s == r] for r in range(s)]
    width = max(len(v) for v in by_residue)
    return [[((r - d[v[j]]) // s, v[j]) if j < len(v) else None for r, v in enumerate(by_residue)]
            for j in range(width)]  # fmt: skip


def _slots(geometry: ConvGeometry, device: torch.device) -> _Slots:
    """The tables of ``geometry`` on ``device`` (cached by what fixes them: not the bound)."""
    g = geometry
    return _tables(g.mode == "transposed", g.kernel_size, g.stride, g.dilation, g.padding, g.offsets_subset, device)


@lru_cache(maxsize=128)
def _tables(transposed: bool, kernel: Int3, stride: Int3, dilation: Int3, padding: Int3, subset: tuple[int, ...] | None,
            device: torch.device) -> _Slots:  # fmt: skip
    axes = [_axis_slots(transposed, kernel[a], stride[a], dilation[a], padding[a]) for a in range(3)]
    (wx, wy, wz), (rx, ry, rz) = (len(t) for t in axes), tuple(len(t[0]) for t in axes)
    number = {k: j for j, k in enumerate(subset)} if subset else None
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
            full = cells[0][1] + kernel[0] * (cells[1][1] + kernel[1] * cells[2][1])  # type: ignore[index]
            k = full if number is None else number.get(full)
            if k is None:  # a tap outside the kernel's subset
                continue
            ok[r][j], tap[r][j] = True, k
            for a, (dv, _) in enumerate(cells):  # type: ignore[misc]
                delta[a][r][j] = dv
            shift[r][j] = shift_key(delta[0][r][j], delta[1][r][j], delta[2][r][j])
    ok_t, deltas = torch.tensor(ok, device="cpu"), tuple(torch.tensor(v, device="cpu") for v in delta)
    span = tuple((int(v[ok_t].min()), int(v[ok_t].max())) if bool(ok_t.any()) else (0, 0) for v in deltas)
    volume = len(subset) if subset else math.prod(kernel)
    taps = torch.tensor(tap, dtype=torch.int16 if volume < (1 << 15) else torch.int64, device="cpu")
    shifts = torch.tensor(shift, device="cpu")
    return _Slots(transposed, (rx, ry, rz), ok_t.to(device), bool(ok_t.all()), shifts.to(device), taps.to(device),
                  tuple(v.to(device) for v in deltas), span)  # fmt: skip


def _bases(c: torch.Tensor, slots: _Slots, geometry: ConvGeometry) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per axis the base ``q`` [N] of every input of ``c`` [4, N] (batch, x, y, z rows), and its flattened
    residue class [N]."""
    bases, residue, scale = [], torch.zeros_like(c[0]), 1
    for a in range(3):
        s, v = geometry.stride[a], c[1 + a]
        if s == 1:
            bases.append(v)
        elif slots.transposed:
            bases.append(v * s)
        elif s & (s - 1) == 0:  # a power of two: shifts, not integer divisions
            bases.append(v >> (s.bit_length() - 1))
            residue += (v & (s - 1)) * scale
        else:
            bases.append(torch.div(v, s, rounding_mode="floor"))
            residue += (v % s) * scale
        scale *= slots.residues[a]
    return bases, residue


def candidates(in_coords: torch.Tensor, geometry: ConvGeometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(keys [M] int64, input rows [M] int64, taps [M])`` of every pair of ``geometry`` (:func:`enumerates`).

    Args:
        in_coords: [N, 4] integer (batch, x, y, z), range-checked.
        geometry: a ``"conv"`` (spconv rule or tiling) or ``"transposed"`` geometry.

    Returns:
        The packed output key, the input row and the tap number (into
        ``geometry.offsets()``; int16, int64 from 32,768 taps on) of each
        pair; a tap's pairs come in input-row order.
    """
    return _candidates(_columns(in_coords), geometry)


def _columns(in_coords: torch.Tensor) -> torch.Tensor:
    """[4, N] int64 (batch, x, y, z) rows of [N, 4] coordinates: contiguous columns (strided ones run 2x slower)."""
    return in_coords.to(torch.int64).T.contiguous()


def _candidates(c: torch.Tensor, geometry: ConvGeometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`candidates` over the [4, N] rows ``c`` of :func:`_columns`."""
    if not enumerates(geometry):
        raise ValueError(f"the outputs of {geometry} are not the candidates of its inputs")
    slots = _slots(geometry, c.device)
    bases, residue = _bases(c, slots, geometry)
    # [N, S]: each input's slots, one row gather of each table by residue class.
    valid = None if slots.full else slots.ok.index_select(0, residue)
    base_keys = pack_fields(c[0], *bases)
    keys = slots.key_shift.index_select(0, residue).add_(base_keys[:, None]).reshape(-1)
    taps = slots.tap.index_select(0, residue).reshape(-1)
    if c.shape[1]:
        valid = _keep_inside(bases, residue, slots, geometry, valid)
    width = slots.ok.shape[1]
    if valid is None:  # every slot of every input is a pair (tiling windows, unbounded transposed convs)
        sel = torch.arange(keys.numel(), device=keys.device)
    else:
        sel = flat_nonzero(valid)
        keys, taps = keys.index_select(0, sel), taps.index_select(0, sel)
    if width & (width - 1) == 0:
        rows = sel >> (width.bit_length() - 1)
    else:
        rows = torch.div(sel, width, rounding_mode="floor")
    return keys, rows, taps


def _keep_inside(bases: list[torch.Tensor], residue: torch.Tensor, slots: _Slots, geometry: ConvGeometry,
                 valid: torch.Tensor | None) -> torch.Tensor | None:  # fmt: skip
    """``valid`` [N, S] (None: all) cleared where a candidate leaves the output grid; raises if one inside
    passes the key range.

    The per-axis ranges of the bases and of the slot deltas decide which axes
    can leave the grid at all; only those are checked per candidate, and the
    key range only after every axis dropped its candidates outside the grid.
    """
    out_shape, beyond = geometry.out_shape, []
    for a in range(3):
        lo, hi = (int(v) for v in torch.aminmax(bases[a]))
        (d_lo, d_hi), upper = slots.span[a], None if out_shape is None else out_shape[a]
        reach = hi + d_hi
        if lo + d_lo >= 0 and (upper is None or reach < upper) and reach <= MAX_COORD:
            continue
        o = slots.delta[a].index_select(0, residue).add_(bases[a][:, None])
        inside = o >= 0 if upper is None else (o >= 0) & (o < upper)
        valid = inside if valid is None else valid & inside
        if reach > MAX_COORD:
            beyond.append((a, o))
    for a, o in beyond:
        if bool((valid & (o > MAX_COORD)).any()):
            raise ValueError(
                f"the input coords would give output coordinates beyond {MAX_COORD} on axis {'xyz'[a]}, the "
                "most the key packing holds; crop the scene or use a larger voxel size"
            )
    return valid


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

    Raises:
        ValueError: ``in_coords`` holds a coordinate twice.
    """
    columns = _columns(in_coords)
    keys, rows, taps = _candidates(columns, geometry)
    out_keys, out_row, _ = unique_inverse(keys)
    in_keys = pack_fields(*columns)
    if in_keys.numel() < 2 or bool((in_keys[1:] > in_keys[:-1]).all()):
        # Unique inputs in key order: grouping by tap keeps each tap's pairs in output order.
        by_tap = stable_argsort(taps)
    else:
        ranked, by_tap = sort_distinct(taps.to(torch.int64) * out_keys.numel() + out_row)
        same = flat_nonzero(ranked[1:] == ranked[:-1])
        if same.numel():  # one output reached twice through one tap: two inputs share coordinates
            raise duplicate_error(int(in_keys[rows[by_tap[same[0]]]]), "in_coords")
    counts = torch.bincount(taps, minlength=geometry.volume)
    return unpack(out_keys), rows.index_select(0, by_tap), out_row.index_select(0, by_tap), tuple(counts.tolist())
