"""The segment-sum scatter of the PyTorch path: GEMM outputs summed per output row by one ``embedding_bag``.

Instead of ``out.index_add_(0, dst, y)`` offset by offset, a pass writes the
GEMM outputs of every offset (the identity tap's too) into one temporary
``y`` [cells, Cout] and adds them up per output row with
``F.embedding_bag(order, y, offsets, mode="sum")``, where ``order`` lists the
rows of ``y`` sorted by output row and ``offsets`` marks where each output's
run starts: a sorted, segmented add. Within an output row the runs follow the
execution order (identity first, then the groups in plan order, the offsets
of a group in order), which is the order the ``index_add_`` scatter adds
them in, so the sums round the same way.

Why: on the CPU ``index_add_`` pays a strided copy per index row (about
27 ns a row at 32 channels, more than the add itself), while
``embedding_bag`` sums with fbgemm's vectorised kernels and parallelises over
output rows (1 thread, SemanticKITTI 0.05 m, the 189,854 gathered pairs:
5.2 -> 1.9 ms at 32 channels, 7.3 -> 3.6 ms at 64; the whole conv about
1.6x faster at 32 channels, 1.1x at 64, where MKL's GEMMs dominate;
``benchmarks/conv_variants.py``).

Blocks: the pass runs over blocks of consecutive output rows whose pairs
(plus identity rows) fit in ``block_cells(...)`` cells, so each block's
temporaries (gathered rows, GEMM outputs) stay under :data:`BLOCK_BYTES`.
Larger temporaries are fresh ``mmap`` s in glibc (its dynamic threshold
stops at 32 MiB) whose pages fault on first touch every call: one block of
all 284,298 cells measured 1.9x slower (18k page faults a call at 64
channels) than 8 MiB blocks, which glibc serves from its heap with no page
faults (a workspace kept across calls gains nothing over 8 MiB blocks). A
pass with several blocks concatenates the blocks' sums; the padded cells of
a grouped plan are summed into nothing and stretch a block past its budget
by the plan's redundancy.

Workspace: a block's gathered rows and GEMM outputs go into the calling
thread's :class:`Workspace`, so every pass (every layer, every map, call
after call) writes into pages that stay mapped. Fresh temporaries of the
same size come from glibc's heap and usually re-use mapped pages, but
whether they do depends on the heap's history: after map building and a
large float64 temporary they faulted again on most calls (about 700 / 3,700
page faults a call at 32 / 64 channels, the pass 14% / 17% slower than with
the workspace). A workspace kept per map (as before 2026-12-02) paid those
faults again on every new map: the first conv on a new SemanticKITTI map
took 2,500-11,000 page faults and 1.5-2.5x its cached time. The pass
returns ``embedding_bag``'s fresh output; nothing it returns is a view of
the workspace.

The block layout (gather indices, bag order, per-group spans) is built once
per map, plan, direction and block size and kept in ``KernelMap.plans``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..kmap.numpy_ops import stable_argsort
from .plan import GroupPlan

if TYPE_CHECKING:
    from ..kmap.kernel_map import KernelMap, MapPairs

Pairs = list[list[tuple[torch.Tensor, torch.Tensor]]]  # (source rows, destination rows) per member, per group

BLOCK_BYTES = 8 << 20  # largest temporary of one block (see the module doc)


def pair_slice(kmap: KernelMap | MapPairs, plan: GroupPlan, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input rows, output rows) of offset ``k``: a view of the map (mirrored offsets of a folded plan swapped)."""
    if plan.folded and k > kmap.volume // 2:
        start, end = kmap.bounds[kmap.volume - 1 - k]
        return kmap.out_idx[start:end], kmap.in_idx[start:end]
    start, end = kmap.bounds[k]
    return kmap.in_idx[start:end], kmap.out_idx[start:end]


class Workspace:
    """Scratch tensors of the segment pass that outlive it, by name, dtype and device; one per thread.

    A buffer grows to the largest request and is never shrunk (at most
    :data:`BLOCK_BYTES` per buffer, past one-row blocks), so a thread holds at
    most two such buffers per dtype and device. Each thread has its own
    (:func:`workspace`), so concurrent passes never share one, and a thread's
    buffers go with it; a pass must not return a view of them (see
    :func:`run_segments`).
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def take(self, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """A [rows, cols] view of buffer ``name`` with ``like``'s dtype and device (contents undefined)."""
        key = (name, like.dtype, like.device)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < rows * cols:
            buf = self._buffers[key] = like.new_empty(rows * cols)
        return buf[: rows * cols].view(rows, cols)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


_per_thread = threading.local()


def workspace() -> Workspace:
    """The calling thread's :class:`Workspace` (created on first use)."""
    ws = getattr(_per_thread, "workspace", None)
    if ws is None:
        ws = _per_thread.workspace = Workspace()
    return ws


def block_cells(cin: int, cout: int, dtype: torch.dtype, chunk_rows: int) -> int:
    """Cells per block: a power of two with ``cells * max(cin, cout)`` elements within :data:`BLOCK_BYTES`."""
    fit = BLOCK_BYTES // (max(cin, cout, 1) * dtype.itemsize)
    cells = 1 << max(fit, 1).bit_length() - 1
    return max(1, min(chunk_rows, cells))


@dataclass(frozen=True)
class SegmentBlock:
    """One block of output rows ``[start, stop)`` of a segment-sum pass.

    Attributes:
        gather: input rows of the gathered cells, group after group; a group of
            ``G`` offsets holds ``G * rows`` cells, member after member, padded
            with row 0.
        spans: per group of the plan, ``(first gathered cell, rows per member)``.
        order: rows of the pass's ``y`` (identity rows first, then the gathered
            cells) sorted by output row, in execution order within a row.
        offsets: [stop - start] start of each output row's run in ``order``.
    """

    start: int
    stop: int
    gather: torch.Tensor
    spans: tuple[tuple[int, int], ...]
    order: torch.Tensor
    offsets: torch.Tensor


def _members(kmap: KernelMap | MapPairs, groups: GroupPlan, swap: bool) -> Pairs:
    """(source rows, destination rows) of each member offset of each group (``swap``: the transposed pass)."""
    members = []
    for group in groups.groups:
        pairs = [pair_slice(kmap, groups, k) for k in group.offsets]
        members.append([(d, s) if swap else (s, d) for s, d in pairs])
    return members


def _by_destination(members: Pairs) -> Pairs:
    """The members with each offset's pairs sorted by destination row (what splitting into blocks needs).

    Maps are stored sorted by output row, so the forward pass sorts nothing;
    the transposed pass of a strided map sorts its offsets once. The pairs of
    one offset commute (a destination row appears at most once per offset).
    """
    out = []
    for pairs in members:
        sorted_pairs = []
        for src, dst in pairs:
            if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
                by = stable_argsort(dst)
                src, dst = src[by], dst[by]
            sorted_pairs.append((src, dst))
        out.append(sorted_pairs)
    return out


def _block_edges(per_row: torch.Tensor, cells: int) -> list[int]:
    """Output-row edges of blocks holding at most ``cells`` cells each (at least one row per block)."""
    n = per_row.numel()
    cum = per_row.cumsum(0)
    edges = [0]
    while edges[-1] < n:
        base = int(cum[edges[-1] - 1]) if edges[-1] else 0
        stop = int(torch.searchsorted(cum, base + cells, right=True))
        edges.append(min(n, max(stop, edges[-1] + 1)))
    return edges


@dataclass(frozen=True)
class _Layout:
    """Where each block puts its cells: per member its cut points, per block and group the first cell and rows."""

    edges: list[int]
    cuts: list[list[list[int]]]  # [group][member] -> B + 1 cut points into the member's pairs
    first: list[list[int]]  # [block][group] first gathered cell
    rows: list[list[int]]  # [block][group] rows per member (the longest member's in-block pairs)
    base: list[int]  # [block] identity rows in front of the gathered cells


def _layout(members: Pairs, edges: list[int], identity: bool) -> _Layout:
    bounds = torch.tensor(edges, device=members[0][0][1].device) if members else None
    cuts = [[torch.searchsorted(d, bounds).tolist() for _, d in pairs] for pairs in members]
    first, rows, base = [], [], []
    for b in range(len(edges) - 1):
        cell, f, r = 0, [], []
        for group_cuts in cuts:
            longest = max(c[b + 1] - c[b] for c in group_cuts)
            f.append(cell)
            r.append(longest)
            cell += longest * len(group_cuts)
        first.append(f)
        rows.append(r)
        base.append(edges[b + 1] - edges[b] if identity else 0)
    return _Layout(edges, cuts, first, rows, base)


def _place(members: Pairs, lay: _Layout, per_row: torch.Tensor, identity: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, offsets) over all rows: the block-local ``y`` row of every cell, sorted by destination row.

    A counting sort (a sort of the 284k cells of the SemanticKITTI map costs
    3x more): each destination row owns ``per_row`` slots from ``offsets``;
    the identity, then each member in execution order, takes the next slot of
    its rows. A row appears at most once per member, so no two cells of one
    member share a slot.
    """
    device = per_row.device
    offsets = per_row.cumsum(0) - per_row
    order = torch.empty(int(per_row.sum()), dtype=torch.long, device=device)
    fill = offsets.clone()
    n_blocks = len(lay.edges) - 1
    if identity:
        local = torch.arange(per_row.numel(), device=device)
        if n_blocks > 1:
            sizes = torch.tensor([e - s for s, e in zip(lay.edges[:-1], lay.edges[1:])], device=device)
            local -= torch.repeat_interleave(torch.tensor(lay.edges[:-1], device=device), sizes)
        order.scatter_(0, fill, local)
        fill += 1
    for g, pairs in enumerate(members):
        for j, (_, dst) in enumerate(pairs):
            c = lay.cuts[g][j]
            shift = [lay.base[b] + lay.first[b][g] + j * lay.rows[b][g] - c[b] for b in range(n_blocks)]
            pos = torch.arange(dst.numel(), device=device)
            if n_blocks > 1:
                counts = torch.tensor([c[b + 1] - c[b] for b in range(n_blocks)], device=device)
                pos += torch.repeat_interleave(torch.tensor(shift, device=device), counts)
            else:
                pos += shift[0]
            slot = fill.index_select(0, dst)
            order.scatter_(0, slot, pos)
            fill.scatter_(0, dst, slot + 1)
    if not torch.equal(fill, offsets + per_row):
        raise ValueError("a kernel map offset lists one output row twice; the segment scatter needs unique rows")
    return order, offsets


def segment_blocks(kmap: KernelMap | MapPairs, groups: GroupPlan, swap: bool, cells: int) -> tuple[SegmentBlock, ...]:
    """The blocks of a pass over ``kmap`` with ``groups`` (cached in ``kmap.plans``)."""
    key = ("torch-segments", groups, swap, cells)
    hit = kmap.plans.get(key)
    if hit is not None:
        return hit
    n_rows = kmap.n_in if swap else kmap.n_out
    identity = groups.identity is not None
    members = _members(kmap, groups, swap)
    dsts = [d for pairs in members for _, d in pairs]
    per_row = torch.bincount(torch.cat(dsts), minlength=n_rows) if dsts else kmap.in_idx.new_zeros(n_rows)
    per_row += int(identity)
    edges = _block_edges(per_row, cells) if n_rows else [0]
    if len(edges) > 2:
        members = _by_destination(members)
    lay = _layout(members, edges, identity)
    order, offsets = _place(members, lay, per_row, identity)
    blocks = []
    for b, (start, stop) in enumerate(zip(lay.edges[:-1], lay.edges[1:])):
        gathers = []
        for g, pairs in enumerate(members):
            for j, (src, _) in enumerate(pairs):
                part = src[lay.cuts[g][j][b] : lay.cuts[g][j][b + 1]]
                pad = lay.rows[b][g] - part.numel() if len(pairs) > 1 else 0
                gathers.append(torch.cat([part, part.new_zeros(pad)]) if pad else part)
        lo, hi = int(offsets[start]), int(offsets[stop - 1] + per_row[stop - 1])
        gather = torch.cat(gathers) if gathers else order.new_zeros(0)
        spans = tuple(zip(lay.first[b], lay.rows[b]))
        blocks.append(SegmentBlock(start, stop, gather, spans, order[lo:hi], offsets[start:stop] - lo))
    kmap.plans[key] = tuple(blocks)
    return kmap.plans[key]


def run_segments(x: torch.Tensor, weight: torch.Tensor, kmap: KernelMap | MapPairs, groups: GroupPlan,
                 swap: bool, chunk_rows: int) -> torch.Tensor:  # fmt: skip
    """One pass ``out[dst] += x[src] @ weight[k]`` with the segment-sum scatter (see the module doc).

    Args:
        x: [n_src, Cin]; weight: [K, Cin, Cout] (a transposed view for the backward).
        swap: the transposed pass (pairs read output -> input).
        chunk_rows: most cells per block (also bounded by :data:`BLOCK_BYTES`).

    Returns:
        [n_rows, Cout], a fresh tensor (never a view of the workspace). The pass
        runs without autograd: it is an executor, differentiated by
        :class:`~.torch_exec.TorchConvFunction` and the conv ops, and nothing
        may keep a reference to the workspace it overwrites next call.
    """
    cin, cout = weight.shape[1], weight.shape[2]
    blocks = segment_blocks(kmap, groups, swap, block_cells(cin, cout, x.dtype, chunk_rows))
    ws = workspace()
    outs = []
    with torch.no_grad():
        for blk in blocks:
            outs.append(_run_block(x, weight, groups, blk, ws))
    if not outs:
        return x.new_zeros((0, cout))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _run_block(x: torch.Tensor, weight: torch.Tensor, groups: GroupPlan, blk: SegmentBlock,
               ws: Workspace) -> torch.Tensor:  # fmt: skip
    """The [stop - start, Cout] sums of one block (GEMM outputs in ``ws``, summed by ``embedding_bag``)."""
    cin, cout = weight.shape[1], weight.shape[2]
    n = blk.stop - blk.start
    base = n if groups.identity is not None else 0
    if base + blk.gather.numel() == 0:
        return x.new_zeros((n, cout))
    y = ws.take("y", base + blk.gather.numel(), cout, x)
    if base:
        torch.mm(x[blk.start : blk.stop], weight[groups.identity], out=y[:base])
    g = ws.take("g", blk.gather.numel(), cin, x)
    torch.index_select(x, 0, blk.gather, out=g)
    for group, (first, rows) in zip(groups.groups, blk.spans):
        size = rows * len(group.offsets)
        if size == 0:
            continue
        a, out = g[first : first + size], y[base + first : base + first + size]
        if len(group.offsets) == 1:
            torch.mm(a, weight[group.offsets[0]], out=out)
        else:
            shape = (len(group.offsets), rows)
            torch.bmm(a.view(*shape, cin), weight[list(group.offsets)], out=out.view(*shape, cout))
    return F.embedding_bag(blk.order, y, blk.offsets, mode="sum")
