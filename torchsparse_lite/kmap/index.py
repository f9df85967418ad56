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
from .protocol import EMPTY, SPLITMIX_1, SPLITMIX_2, Index, duplicate_error, empty_table, hits, sort_keys


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
        active = torch.nonzero(keys >= 0).squeeze(1)
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


class SortIndex:
    """Sorted packed keys answered by binary search.

    Args:
        keys: [N] int64 non-negative packed keys (unique).
        name: argument name used in the duplicate-key error.
    """

    def __init__(self, keys: torch.Tensor, name: str = "coords") -> None:
        self.sorted_keys, self.order, self.in_key_order = sort_keys(keys, name)

    def lower_bound(self, keys: torch.Tensor) -> torch.Tensor:
        """[M] positions in ``[0, N]`` of the first sorted key ``>= keys``."""
        if keys.device.type == "cpu":
            # NumPy's binary search reuses the previous answer as a lower
            # bound, which pays off on the (mostly sorted) queries of a map
            # build: about 1.5x faster than torch.searchsorted on the CPU.
            return torch.from_numpy(np.searchsorted(self.sorted_keys.numpy(), keys.numpy()))
        return torch.searchsorted(self.sorted_keys, keys)

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
        hit = torch.nonzero(self.sorted_keys[pos] == keys).squeeze(1)
        return hit, self.order[pos[hit]]


def make_index(keys: torch.Tensor, builder: str, name: str = "coords") -> Index:
    """Build the index named by ``builder``: ``"hash"``, ``"sort"`` or ``"auto"``.

    ``"auto"`` takes the sort index on the CPU (vectorised binary search beats
    round-based probing there) and the hash table on the GPU.
    """
    if builder == "auto":
        builder = "hash" if keys.is_cuda else "sort"
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
