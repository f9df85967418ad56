"""What every coordinate index shares: the :class:`Index` protocol, its constants and errors.

Imports nothing of the package but :mod:`.keys` and :mod:`.numpy_ops`, so the PyTorch indexes
(:mod:`.index`) and the Triton ones (``torchsparse_lite.kernels``) both build
on it without importing each other.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .keys import unpack
from .numpy_ops import flat_nonzero, sort_distinct

EMPTY = -1  # empty table slot / absent row
SPLITMIX_1 = -4658895280553007687  # 0xBF58476D1CE4E5B9 as a signed int64 (SplitMix64 finaliser)
SPLITMIX_2 = -7723592293110705685  # 0x94D049BB133111EB


@runtime_checkable
class Index(Protocol):
    """An index over a set of unique packed coordinate keys.

    * ``query(keys [M] int64) -> rows [M] int64`` (-1 where absent; negative keys never hit);
    * ``lookup(keys) -> (hit positions [H], rows [H])``, the hits only.
    """

    def query(self, keys: torch.Tensor) -> torch.Tensor: ...

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def duplicate_error(key: int, name: str) -> ValueError:
    """The error for a coordinate set that holds the packed ``key`` twice."""
    b, x, y, z = unpack(torch.tensor([key])).tolist()[0]
    return ValueError(
        f"{name} holds duplicate coordinates, e.g. (batch={b}, x={x}, y={y}, z={z}); a sparse tensor "
        "needs one row per voxel: deduplicate with sparse_quantize (or torch.unique with an inverse map)"
    )


def empty_table(n: int, device: torch.device) -> tuple[int, torch.Tensor, torch.Tensor]:
    """An empty open-addressing table for ``n`` keys: (slot mask, keys [cap], rows [cap]).

    The capacity is the smallest power of two >= 2n (load factor <= 0.5, so
    probe sequences stay short), at least 16.
    """
    cap = 16
    while cap < 2 * n:
        cap *= 2
    keys = torch.full((cap,), EMPTY, dtype=torch.int64, device=device)
    return cap - 1, keys, torch.full_like(keys, EMPTY)


def sort_keys(keys: torch.Tensor, name: str = "coords") -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(sorted keys, order, in_key_order) of [N] unique keys; raises on a duplicate.

    Coordinates usually arrive in key order already (sparse_quantize and
    strided outputs come from torch.unique): then nothing is sorted and rows
    are their own key ranks (``in_key_order``).
    """
    if keys.numel() < 2 or bool((keys[1:] > keys[:-1]).all()):
        return keys, torch.arange(keys.numel(), device=keys.device), True
    sorted_keys, order = sort_distinct(keys)  # a duplicate, if any, is found below either way
    dup = sorted_keys[1:] == sorted_keys[:-1]
    if bool(dup.any()):
        raise duplicate_error(int(sorted_keys[1:][dup][0]), name)
    return sorted_keys, order, False


def hits(found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions, rows)`` of the hits of a ``query`` answer (rows >= 0)."""
    hit = flat_nonzero(found >= 0)
    return hit, found[hit]
