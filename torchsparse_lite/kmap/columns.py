"""Column search: one binary search per (dx, dy) column of the kernel instead of one per tap.

With the linear key packing, z is the least significant field, so the taps
``(dx, dy, dz_min) ... (dx, dy, dz_max)`` of one kernel column query the keys
``t + dz`` of one integer window ``[t + dz_min, t + dz_max]``. In the sorted
key array, the stored keys of that window are consecutive: after one lower-bound
search for ``t + dz_min`` at position ``p``, the key ``t + dz`` (if stored)
sits at ``p + j`` for some ``0 <= j <= dz - dz_min`` — a few compares against
gathered neighbours replace the other searches. For a 3x3x3 submanifold conv
with its mirror symmetry this is 4 searches (plus free adjacent compares for
the centre column) instead of 13.

Only queries of the form ``base_key + packed_shift`` qualify (submanifold and
strided convs; transposed maps need a divisibility check per tap and keep the
per-tap search), and only a sorted-key index can answer them.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .numpy_ops import flat_nonzero

MAX_WINDOW = 8  # beyond this many integers per column, per-tap searches are cheaper than the compares


def plan_columns(shifts: torch.Tensor, taps: list[int]) -> list[tuple[int, int, list[tuple[int, int]]]] | None:
    """Group ``taps`` by the (dx, dy) of their query shift (rows of ``shifts`` [K, 3]): ``[(dx, dy, [(tap, dz)])]``.

    Returns None when a column's z window is wider than :data:`MAX_WINDOW`.
    """
    cols: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for k in taps:
        dx, dy, dz = (int(v) for v in shifts[k])
        cols[(dx, dy)].append((k, dz))
    plan = []
    for (dx, dy), members in cols.items():
        dzs = [dz for _, dz in members]
        if max(dzs) - min(dzs) + 1 > MAX_WINDOW:
            return None
        plan.append((dx, dy, sorted(members, key=lambda m: m[1])))
    return plan


def column_matches(
    padded_keys: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor, dz_span: list[int], slack: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each ``rel`` in ``dz_span``: ``(query rows, sorted positions)`` of the stored keys ``targets + rel``.

    Args:
        padded_keys: [S + W] int64 sorted unique keys followed by at least
            ``W = max(dz_span) + 1 + slack`` slots no query can equal (see
            :meth:`~torchsparse_lite.kmap.index.SortIndex.padded_keys`).
        positions: [M] lower-bound positions of ``targets`` in the sorted keys
            (in ``[0, S]``, or up to ``slack`` slots before them).
        targets: [M] int64 query keys of the column's lowest tap.
        dz_span: per tap of the column, its distance (>= 0) from the lowest tap.
        slack: how many slots ``positions`` may lie before the true lower bounds.

    Returns:
        Per tap, the hits in query order: rows into ``targets`` and the
        positions of their keys in the sorted keys.
    """
    width = max(dz_span) + 1 + slack
    # ``gaps[j][m]``: how far the j-th stored key from query m's lower bound
    # lies above its lowest tap. Keys are unique and sorted, so along the
    # window the gaps strictly increase and ``rel`` can only sit in one of the
    # first ``rel + 1 + slack`` slots (each stored key of the window before it
    # pushes it one slot further), and in at most one. ``index_select`` on 1-D
    # tensors: the advanced-indexing gather of a 2-D window costs 3x more.
    gaps = [padded_keys.index_select(0, positions + j if j else positions) - targets for j in range(width)]
    out = []
    for rel in dz_span:
        last = rel + slack
        hit = gaps[0] == rel
        for j in range(1, last + 1):
            hit |= gaps[j] == rel
        rows = flat_nonzero(hit)
        found = positions.index_select(0, rows)
        # The one slot whose gap is ``rel`` (the padding past the end breaks
        # the increase, so the slot is matched, not counted).
        for j in range(1, last + 1):
            found += (gaps[j].index_select(0, rows) == rel) * j
        out.append((rows, found))
    return out
