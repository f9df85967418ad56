"""Sorted-keys index queried by a Triton binary-search kernel.

The keys are sorted once with ``torch.sort`` (the GPU radix sort); each query
key then runs a branch-free binary search: ``ceil(log2(N + 1))`` steps of
``lo/hi`` updates with one load each, the same number of steps for every lane
so the warp never diverges. A final load checks whether the key was found and
returns its original row through the sort permutation.

Map building asks an index for ``lookup(keys)`` (the hits and their rows),
not ``query``: :class:`TritonSortIndex` overrides both, so the kernel is what
answers either way (the parent's ``lookup`` would search with torch/numpy).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from torchsparse_lite.kmap.protocol import EMPTY, Index, hits, sort_keys

from .device import on_device
from .hash_index import TritonHashIndex

BLOCK = 128


@triton.jit(do_not_specialize=["n_keys", "n_sorted", "n_steps"])
def sorted_query_kernel(sorted_ptr, order_ptr, keys_ptr, out_ptr, n_keys, n_sorted, n_steps, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n_keys
    key = tl.load(keys_ptr + offs, mask=inb, other=-1)
    lo = tl.zeros((BLOCK,), dtype=tl.int64)
    hi = tl.zeros((BLOCK,), dtype=tl.int64) + n_sorted
    for _ in range(n_steps):
        open_ = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(sorted_ptr + mid, mask=inb & open_, other=0)
        right = v < key
        lo = tl.where(open_ & right, mid + 1, lo)
        hi = tl.where(open_ & ~right, mid, hi)
    pos = tl.minimum(lo, n_sorted - 1)
    found = tl.load(sorted_ptr + pos, mask=inb, other=-1)
    hit = inb & (key >= 0) & (found == key)
    row = tl.load(order_ptr + pos, mask=hit, other=-1)
    tl.store(out_ptr + offs, tl.where(hit, row, -1), mask=inb)


class TritonSortIndex:
    """Sorted packed keys whose queries run the Triton binary search (the :class:`Index` protocol).

    Args:
        keys: [N] int64 non-negative packed keys (unique), CUDA (or CPU under the interpreter).
        name: argument name used in the duplicate-key error.
    """

    def __init__(self, keys: torch.Tensor, name: str = "coords") -> None:
        self.sorted_keys, self.order, self.in_key_order = sort_keys(keys.contiguous(), name)

    def query(self, keys: torch.Tensor) -> torch.Tensor:
        """[M] int64 keys (negative = no query) -> [M] int64 rows, -1 where absent."""
        keys = keys.contiguous()
        n = self.sorted_keys.numel()
        if n == 0 or keys.numel() == 0:
            return torch.full_like(keys, EMPTY)
        out = torch.empty_like(keys)
        with on_device(keys=keys, sorted_keys=self.sorted_keys):
            sorted_query_kernel[(triton.cdiv(keys.numel(), BLOCK),)](
                self.sorted_keys, self.order, keys, out, keys.numel(), n, n.bit_length(), BLOCK=BLOCK
            )
        return out

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries that hit and their rows, ``(positions [H], rows [H])``, answered by the kernel."""
        return hits(self.query(keys))


def make_triton_index(keys: torch.Tensor, builder: str, name: str = "coords") -> Index:
    """Triton counterpart of :func:`~torchsparse_lite.kmap.make_index` (``"hash"`` or ``"sort"``)."""
    if builder == "hash":
        return TritonHashIndex(keys, name)
    if builder == "sort":
        return TritonSortIndex(keys, name)
    raise ValueError(f"kmap_builder must be 'hash' or 'sort', got {builder!r}")
