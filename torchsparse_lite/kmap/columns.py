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


def column_hits(
    sorted_keys: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor, dz_span: list[int], slack: int = 0
) -> list[torch.Tensor]:
    """For each ``dz - dz_min`` in ``dz_span``: the sorted position of key ``targets + that`` or -1.

    Args:
        sorted_keys: [S] int64 sorted unique keys.
        positions: [M] lower-bound positions of ``targets`` in ``sorted_keys``
            (in ``[0, S]``, or up to ``slack`` slots before them).
        targets: [M] int64 query keys of the column's lowest tap.
        dz_span: per tap of the column, its distance (>= 0) from the lowest tap.
        slack: how many slots ``positions`` may lie before the true lower bounds.
    """
    width = max(dz_span) + 1 + slack
    # Slots past the end hold no key: pad with a value no query has.
    padded = torch.cat([sorted_keys, sorted_keys.new_full((width,), -(1 << 62))])
    slots = [positions + j for j in range(width)]
    window = [padded[s] for s in slots]
    out = []
    for rel in dz_span:
        want = targets + rel
        found = torch.full_like(positions, -1)
        # The key sits at most ``rel`` slots after the lower bound: each
        # stored key of the window before it pushes it one slot further.
        for j in range(rel + 1 + slack):
            found = torch.where(window[j] == want, slots[j], found)
        out.append(found)
    return out
