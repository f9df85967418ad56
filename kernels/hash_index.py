"""Open-addressing hash table of packed coordinates, built and probed by Triton kernels.

Insert: every program takes ``BLOCK`` keys; each key claims its home slot
with ``atomic_cas(slot, EMPTY, key)`` and, when another key got there first,
moves on to the next slot (linear probing) until it wins. A CAS that returns
the key itself means the key was already inserted: a duplicate coordinate.
Row numbers are written after the claim; the query runs in a later launch, so
it never sees a half-written entry.

Query: each key walks from its home slot until it finds itself (hit) or an
empty slot (miss). The table is at most half full, so walks are short.

Lanes that are done keep running the loop with a compare value (-2) that no
slot ever holds, so their CAS is a no-op read: ``atomic_cas`` takes no mask.
The hash (SplitMix64 finaliser) is the one of the PyTorch
:class:`~torchsparse_lite.kmap.HashIndex`.

The key count and table mask change with every coordinate set, so the
launcher does not specialise on them; both launches run under the keys'
device (:mod:`.device`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from torchsparse_lite.kmap.protocol import EMPTY, SPLITMIX_1, SPLITMIX_2, duplicate_error, empty_table, hits

from .device import on_device

BLOCK = 128
# The SplitMix64 constants of the PyTorch HashIndex, as compile-time constants of the kernels.
MIX_1 = tl.constexpr(SPLITMIX_1)
MIX_2 = tl.constexpr(SPLITMIX_2)


@triton.jit
def _home(key, mask_cap):
    # SplitMix64 finaliser, as HashIndex's _hash (int64 wrap-around intended).
    h = (key ^ (key >> 30)) * MIX_1
    h = (h ^ (h >> 27)) * MIX_2
    h = h ^ (h >> 31)
    return h & mask_cap


@triton.jit(do_not_specialize=["n", "mask_cap"])
def hash_insert_kernel(table_keys_ptr, table_rows_ptr, keys_ptr, dup_ptr, n, mask_cap, BLOCK: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    active = rows < n
    key = tl.load(keys_ptr + rows, mask=active, other=0)
    slot = _home(key, mask_cap)
    while tl.max(active.to(tl.int32), axis=0) > 0:
        cmp = tl.where(active, -1, -2).to(tl.int64)
        prev = tl.atomic_cas(table_keys_ptr + slot, cmp, key)
        won = active & (prev == -1)
        dup = active & (prev == key)
        tl.store(table_rows_ptr + slot, rows.to(tl.int64), mask=won)
        tl.store(dup_ptr + slot * 0, key, mask=dup)
        active = active & ~won & ~dup
        slot = tl.where(active, (slot + 1) & mask_cap, slot)


@triton.jit(do_not_specialize=["n", "mask_cap"])
def hash_query_kernel(table_keys_ptr, table_rows_ptr, keys_ptr, out_ptr, n, mask_cap, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    key = tl.load(keys_ptr + offs, mask=inb, other=-1)
    active = inb & (key >= 0)
    slot = _home(key, mask_cap)
    found_row = tl.full((BLOCK,), -1, dtype=tl.int64)
    while tl.max(active.to(tl.int32), axis=0) > 0:
        stored = tl.load(table_keys_ptr + slot, mask=active, other=-1)
        hit = active & (stored == key)
        found_row = tl.where(hit, tl.load(table_rows_ptr + slot, mask=hit, other=-1), found_row)
        active = active & ~hit & (stored != -1)
        slot = tl.where(active, (slot + 1) & mask_cap, slot)
    tl.store(out_ptr + offs, found_row, mask=inb)


class TritonHashIndex:
    """Open-addressing table over packed keys, same interface as :class:`~torchsparse_lite.kmap.HashIndex`.

    Args:
        keys: [N] int64 non-negative packed keys (unique), CUDA (or CPU under the interpreter).
        name: argument name used in the duplicate-key error.
    """

    def __init__(self, keys: torch.Tensor, name: str = "coords") -> None:
        keys = keys.contiguous()
        n = keys.numel()
        self.mask, self.table_keys, self.table_rows = empty_table(n, keys.device)
        dup = torch.full((1,), EMPTY, dtype=torch.int64, device=keys.device)
        if n:
            with on_device(keys=keys):
                hash_insert_kernel[(triton.cdiv(n, BLOCK),)](
                    self.table_keys, self.table_rows, keys, dup, n, self.mask, BLOCK=BLOCK
                )
        dup_key = int(dup.item())
        if dup_key != EMPTY:
            raise duplicate_error(dup_key, name)

    def query(self, keys: torch.Tensor) -> torch.Tensor:
        """[M] int64 keys (negative = no query) -> [M] int64 rows, -1 where absent."""
        keys = keys.contiguous()
        out = torch.empty_like(keys)
        if keys.numel():
            with on_device(keys=keys, table=self.table_keys):
                hash_query_kernel[(triton.cdiv(keys.numel(), BLOCK),)](
                    self.table_keys, self.table_rows, keys, out, keys.numel(), self.mask, BLOCK=BLOCK
                )
        return out

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries that hit and their rows: ``(query positions [H], rows [H])``."""
        return hits(self.query(keys))
