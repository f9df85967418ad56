"""Two interchangeable indexes over a set of packed coordinate keys.

Both answer ``query(keys) -> rows`` (-1 where absent) and refuse duplicate keys.

* :class:`HashIndex` — an open-addressing table (linear probing, load <= 0.5)
  built once per coordinate set, probed for every query, as TorchSparse and
  spconv do on the GPU. Insertion runs in rounds: every pending key tries its
  next slot, a scatter picks one winner per empty slot, losers probe on.
* :class:`SortIndex` — the keys sorted once, every query answered by batched
  binary search (``torch.searchsorted``), as Minuet and PointAcc do.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import KMAP_BUILDERS
from .numpy_ops import flat_nonzero
from .protocol import EMPTY, SPLITMIX_1, SPLITMIX_2, Index, duplicate_error, empty_table, hits, sort_keys
from .threads import thread_map


def _hash(keys: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser (int64 wrap-around intended).

    The packed key's low bits are just z, so the table slot (low bits of the
    hash) must depend on every field: two multiply/xor-shift rounds mix them.
    """
    h = (keys ^ (keys >> 30)) * SPLITMIX_1
    h = (h ^ (h >> 27)) * SPLITMIX_2
    return h ^ (h >> 31)


class HashIndex:
    """Open-addressing hash table from packed keys to row numbers.

    Args:
        keys: [N] int64 non-negative packed keys (unique).
        name: argument name used in the duplicate-key error.
    """

    def __init__(self, keys: torch.Tensor, name: str = "coords") -> None:
        n = keys.numel()
        self.mask, self.table_keys, self.table_rows = empty_table(n, keys.device)
        pending = torch.arange(n, device=keys.device)
        home = _hash(keys)
        probe = 0
        while pending.numel():
            slot = (home[pending] + probe) & self.mask
            free = self.table_keys[slot] == EMPTY
            # Many keys may race for one free slot: the scatter keeps one, and
            # reading the slot back tells every key whether it won.
            self.table_rows[slot[free]] = pending[free]
            self.table_keys[slot[free]] = keys[self.table_rows[slot[free]]]
            won = self.table_rows[slot] == pending
            same = (self.table_keys[slot] == keys[pending]) & ~won
            if bool(same.any()):
                raise duplicate_error(int(keys[pending[same][0]]), name)
            pending = pending[~won]
            probe += 1

    def query(self, keys: torch.Tensor) -> torch.Tensor:
        """[M] int64 keys (negative = no query) -> [M] int64 rows, -1 where absent."""
        rows = torch.full_like(keys, EMPTY)
        active = flat_nonzero(keys >= 0)
        home = _hash(keys)
        probe = 0
        while active.numel():
            slot = (home[active] + probe) & self.mask
            found = self.table_keys[slot]
            hit = found == keys[active]
            rows[active[hit]] = self.table_rows[slot[hit]]
            active = active[~(hit | (found == EMPTY))]
            probe += 1
        return rows

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries that hit and their rows: ``(query positions [H], rows [H])``."""
        return hits(self.query(keys))


MIN_SPLIT = 16384  # fewest queries worth a search task of their own (a task costs ~0.05 ms)


class SortIndex:
    """Sorted packed keys answered by binary search.

    Args:
        keys: [N] int64 non-negative packed keys (unique).
        name: argument name used in the duplicate-key error.
    """

    def __init__(self, keys: torch.Tensor, name: str = "coords") -> None:
        self.sorted_keys, self.order, self.in_key_order = sort_keys(keys, name)
        self._padded: torch.Tensor | None = None

    def padded_keys(self, width: int) -> torch.Tensor:
        """[N + width] the sorted keys followed by ``width`` slots no query key equals (cached, grows)."""
        if self._padded is None or self._padded.numel() < self.sorted_keys.numel() + width:
            # Far below every key and every key minus a kernel shift, so a
            # difference against a query never comes out as a small gap.
            pad = self.sorted_keys.new_full((width,), -(1 << 62))
            self._padded = torch.cat([self.sorted_keys, pad])
        return self._padded

    def lower_bound(self, keys: torch.Tensor) -> torch.Tensor:
        """[M] positions in ``[0, N]`` of the first sorted key ``>= keys``."""
        return self.lower_bounds([keys])[0]

    def lower_bounds(self, queries: list[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`lower_bound` of every tensor of ``queries``, the searches spread over the CPU threads."""
        if not queries or queries[0].device.type != "cpu":
            return [torch.searchsorted(self.sorted_keys, q) for q in queries]
        # NumPy's binary search reuses the previous answer as a lower bound,
        # which pays off on the (mostly sorted) queries of a map build: about
        # 1.5x faster than torch.searchsorted on one thread. It runs on one
        # core but releases the GIL, so the searches (split into parts when
        # there are fewer than threads) run side by side; the answers do not
        # depend on the split. In a map build the gain is small (1.8x alone,
        # ~1.1x there, 2026-12-02): libgomp's workers keep spinning on the
        # other core for 10-20 ms after the torch ops before the searches.
        keys = self.sorted_keys.numpy()
        parts = max(1, -(-torch.get_num_threads() // len(queries)))
        tasks = [(i, q.numpy()[lo:hi]) for i, q in enumerate(queries) for lo, hi in _splits(q.numel(), parts)]
        found = thread_map(lambda task: np.searchsorted(keys, task[1]), tasks)
        out: list[list[np.ndarray]] = [[] for _ in queries]
        for (i, _), part in zip(tasks, found):
            out[i].append(part)
        return [torch.from_numpy(p[0] if len(p) == 1 else np.concatenate(p)) for p in out]

    def _positions(self, keys: torch.Tensor) -> torch.Tensor:
        """Insertion positions of ``keys``, clamped to the last slot."""
        return self.lower_bound(keys).clamp_(max=self.sorted_keys.numel() - 1)

    def query(self, keys: torch.Tensor) -> torch.Tensor:
        """[M] int64 keys (negative = no query) -> [M] int64 rows, -1 where absent."""
        if self.sorted_keys.numel() == 0:
            return torch.full_like(keys, EMPTY)
        pos = self._positions(keys)
        hit = self.sorted_keys[pos] == keys
        return torch.where(hit, self.order[pos], torch.full_like(keys, EMPTY))

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :func:`lookup` but without materialising the misses."""
        if self.sorted_keys.numel() == 0:
            return keys.new_empty(0), keys.new_empty(0)
        pos = self._positions(keys)
        hit = flat_nonzero(self.sorted_keys[pos] == keys)
        return hit, self.order[pos[hit]]


def _splits(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive ranges covering ``range(n)`` (one when ``n`` is small)."""
    parts = max(1, min(parts, n // MIN_SPLIT))
    step = -(-n // parts) if n else 0
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)] if n else [(0, 0)]


def resolve_builder(builder: str, device: torch.device) -> str:
    """The index ``builder`` names on ``device``: ``"auto"`` is the sort index on the CPU (vectorised
    binary search beats round-based probing there) and the hash table on the GPU; others name themselves."""
    if builder == "auto":
        return "hash" if device.type == "cuda" else "sort"
    return builder


def make_index(keys: torch.Tensor, builder: str, name: str = "coords") -> Index:
    """Build the index named by ``builder``: ``"hash"``, ``"sort"`` or ``"auto"`` (:func:`resolve_builder`)."""
    builder = resolve_builder(builder, keys.device)
    if builder in ("triton_hash", "triton_sort") or (keys.is_cuda and builder in ("hash", "sort")):
        # CUDA keys get the Triton-kernel index of the same kind; the explicit
        # "triton_*" names let tests run it on the CPU under TRITON_INTERPRET=1.
        from ..kernels.sort_index import make_triton_index  # noqa: PLC0415 - Triton is imported only when used

        return make_triton_index(keys, builder.removeprefix("triton_"), name)
    if builder == "hash":
        return HashIndex(keys, name)
    if builder == "sort":
        return SortIndex(keys, name)
    raise ValueError(f"kmap_builder must be one of {KMAP_BUILDERS}, got {builder!r}")
