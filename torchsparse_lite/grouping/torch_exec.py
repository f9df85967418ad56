"""The PyTorch gather -> GEMM -> scatter: runs any grouping plan on the CPU (and on CUDA without Triton).

For each kernel offset ``k`` with pairs ``(i, o)``:

    out[o] += feats[i] @ weight[k]                 (forward)
    grad_feats[i] += grad_out[o] @ weight[k].T     (backward: the transposed map)
    grad_weight[k] = feats[i].T @ grad_out[o]

A group of one offset (every group of the ``"separate"`` strategy) gathers a
slice of the map, one GEMM, one ``index_add_``, at most ``chunk_rows`` rows
at a time. A group ``(k_1..k_G)`` padded to ``R`` rows becomes index tensors
``src, dst`` of shape [G, R] (padding points at row 0 for gathers and at a
dummy output row for scatters), so that

    out[dst] += bmm(feats[src].view(G, R, Cin), weight[k_1..k_G])

runs all offsets of the group in one matmul. The centre tap of a submanifold
conv maps every row to itself and runs as a plain GEMM without gather. The
backward pass reuses the same indices with ``src``/``dst`` swapped and the
weight transposed. Group indices are built once per map and plan and kept in
``KernelMap.plans``.

That is the ``scatter="index_add"`` pass. With ``scatter="segment"`` (the
CPU default) :func:`run_groups` hands the pass to :mod:`.segments`, which
runs the same GEMMs into one temporary per block of output rows and sums it
per output row with ``embedding_bag`` instead of ``index_add_``; the weight
gradient is the same for both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..kmap.kernel_map import KernelMap, MapPairs
from .config import GroupingConfig, as_grouping
from .execution import ExecutionPlan, default_scatter
from .plan import Group, GroupPlan, plan_groups
from .segments import Workspace, block_cells, pair_slice, run_segments, workspace

AnyMap = KernelMap | MapPairs  # the executors read pairs, counts and row counts only (the conv ops pass MapPairs)
GroupIndex = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Gemm = Callable[[torch.Tensor, int], torch.Tensor]  # (gathered rows [m, Cin], offset k) -> [m, Cout]


def group_indices(kmap: AnyMap, plan: GroupPlan, group: Group) -> GroupIndex:
    """(src [G, R], dst [G, R], valid [G, R] bool) of one group; padded cells hold row 0.

    In a folded plan offset ``k`` past the centre is read as offset
    ``K-1-k``'s pairs with inputs and outputs swapped (only one half of the
    map is touched).
    """
    device = kmap.in_idx.device
    bounds = kmap.bounds
    volume = kmap.volume
    starts, swap = [], []
    for k in group.offsets:
        mirrored = plan.folded and k > volume // 2
        starts.append(bounds[volume - 1 - k if mirrored else k][0])
        swap.append(mirrored)
    rows = torch.arange(group.rows, device=device)
    counts = torch.tensor([plan.counts[k] for k in group.offsets], device=device)
    valid = rows[None, :] < counts[:, None]
    pos = torch.tensor(starts, device=device)[:, None] + rows[None, :]
    pos = torch.where(valid, pos, 0)
    a, b = kmap.in_idx[pos], kmap.out_idx[pos]
    flip = torch.tensor(swap, device=device)[:, None]
    src = torch.where(valid, torch.where(flip, b, a), 0)
    dst = torch.where(valid, torch.where(flip, a, b), 0)
    return src, dst, valid


def _batched(kmap: AnyMap, plan: GroupPlan) -> list[GroupIndex | None]:
    """Padded indices of every multi-offset group (None for single offsets), built once per map and plan."""
    key = ("torch-groups", plan)
    if key not in kmap.plans:
        kmap.plans[key] = [group_indices(kmap, plan, g) if len(g.offsets) > 1 else None for g in plan.groups]
    return kmap.plans[key]


def scatter_offsets(
    x: torch.Tensor, gemm: Gemm, src: torch.Tensor, dst: torch.Tensor, k: int, out: torch.Tensor, chunk_rows: int
) -> None:
    """``out[dst] += gemm(x[src], k)`` in steps of at most ``chunk_rows`` rows (the gather buffer's bound)."""
    for s in range(0, src.shape[0], chunk_rows):
        out.index_add_(0, dst[s : s + chunk_rows], gemm(x.index_select(0, src[s : s + chunk_rows]), k))


def _scatter_batched(
    x: torch.Tensor, w: torch.Tensor, index: GroupIndex, out: torch.Tensor, n_rows: int, step: int, ordered: bool
) -> None:
    """``out[dst] += bmm(x[src], w)`` for one padded group; ``ordered`` scatters offset by offset."""
    src, dst, valid = index
    dst = torch.where(valid, dst, n_rows)
    for r0 in range(0, src.shape[1], step):
        s, d = src[:, r0 : r0 + step], dst[:, r0 : r0 + step]
        y = torch.bmm(x.index_select(0, s.reshape(-1)).view(s.shape[0], s.shape[1], -1), w)
        if ordered:
            for g in range(y.shape[0]):
                out.index_add_(0, d[g], y[g])
        else:
            out.index_add_(0, d.reshape(-1), y.view(-1, y.shape[2]))


def run_groups(x: torch.Tensor, weight: torch.Tensor, kmap: AnyMap, plan: ExecutionPlan, swap: bool) -> torch.Tensor:
    """One sparse matmul pass: forward (``swap=False``) or the input gradient (``swap=True``, weight transposed).

    Args:
        x: [n_in, Cin] (forward) or [n_out, Cout] grad (backward).
        weight: [K, Cin, Cout] (or its transpose for the backward).

    Returns:
        [n_out, Cout] (or [n_in, Cin]) in ``x.dtype``.
    """
    groups = plan.groups
    if plan.scatter == "segment":
        return run_segments(x, weight, kmap, groups, swap, plan.chunk_rows)
    n_rows = kmap.n_in if swap else kmap.n_out
    batched = _batched(kmap, groups)
    padded = any(b is not None for b in batched)
    if groups.identity is not None and not padded:
        # The centre tap maps every row to itself: a plain GEMM initialises
        # the output, saving both a zero fill and a gather.
        out = x @ weight[groups.identity]
    else:
        out = x.new_zeros((n_rows + padded, weight.shape[2]))  # a last row soaks up padded cells
        if groups.identity is not None:
            out[:n_rows].addmm_(x, weight[groups.identity])
    for group, index in zip(groups.groups, batched):
        if index is None:
            src, dst = pair_slice(kmap, groups, group.offsets[0])
            scatter_offsets(x, lambda g, k: g @ weight[k], *((dst, src) if swap else (src, dst)),
                            group.offsets[0], out, plan.chunk_rows)  # fmt: skip
        else:
            src, dst, valid = index
            index = (dst, src, valid) if swap else index
            step = max(1, plan.chunk_rows // len(group.offsets))
            _scatter_batched(x, weight[list(group.offsets)], index, out, n_rows, step, plan.ordered_scatter)
    return out[:n_rows] if padded else out


def _gather(x: torch.Tensor, rows: torch.Tensor, ws: Workspace | None, name: str) -> torch.Tensor:
    """``x[rows]``, into workspace buffer ``name`` when ``ws`` is given (else a fresh, differentiable gather)."""
    if ws is None:
        return x.index_select(0, rows)
    return torch.index_select(x, 0, rows, out=ws.take(name, rows.numel(), x.shape[1], x))


FIXED_ROWS = 256  # rows per partial product of a deterministic weight gradient (see fixed_order_tn)


def fixed_order_tn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^T @ b`` over the rows (dim -2) of ``a`` [..., R, Cin] and ``b`` [..., R, Cout], summed in an
    order that does not depend on the thread count -> [..., Cin, Cout].

    BLAS splits a long reduction across threads (a weight gradient's sum over
    all pairs differed between 1 and 2 threads), so the rows are cut into
    :data:`FIXED_ROWS`-row pieces (zero-padded; zeros add nothing), each
    piece is one small product in a ``bmm`` (probed: identical on 1 and 2
    threads for 16-256 channels), and the pieces are added as a fixed
    pairwise tree of elementwise adds.
    """
    rows = a.shape[-2]
    pieces = max(1, -(-rows // FIXED_ROWS))
    pad = pieces * FIXED_ROWS - rows
    if pad:
        a = torch.nn.functional.pad(a, (0, 0, 0, pad))
        b = torch.nn.functional.pad(b, (0, 0, 0, pad))
    lead = a.shape[:-2]
    pa = a.reshape(-1, FIXED_ROWS, a.shape[-1]).transpose(1, 2)
    parts = torch.bmm(pa, b.reshape(-1, FIXED_ROWS, b.shape[-1])).view(*lead, pieces, a.shape[-1], b.shape[-1])
    while parts.shape[-3] > 1:
        if parts.shape[-3] % 2:
            parts = torch.cat([parts, torch.zeros_like(parts.narrow(-3, 0, 1))], dim=-3)
        parts = parts[..., 0::2, :, :] + parts[..., 1::2, :, :]
    return parts.squeeze(-3)


def _add_tn(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, deterministic: bool) -> None:
    """``out += a^T @ b`` (in a thread-count-independent order when ``deterministic``)."""
    if deterministic:
        out += fixed_order_tn(a, b)
    else:
        out.addmm_(a.t(), b)


def weight_grad_groups(
    feats: torch.Tensor, grad_out: torch.Tensor, kmap: AnyMap, plan: ExecutionPlan
) -> torch.Tensor:
    """``grad_weight[k] = feats[in_k].T @ grad_out[out_k]`` for every offset -> [K, Cin, Cout]."""
    groups = plan.groups
    grad = feats.new_zeros((kmap.volume, feats.shape[1], grad_out.shape[1]))
    det = plan.deterministic
    if groups.identity is not None:
        _add_tn(grad[groups.identity], feats, grad_out, det)
    # Gathers go into the thread's workspace (pages stay mapped; fresh
    # multi-MiB gathers page-fault on most calls), in steps bounded like the
    # segment pass's blocks, unless a double backward records this pass.
    recorded = torch.is_grad_enabled() and (feats.requires_grad or grad_out.requires_grad)
    ws = None if recorded else workspace()
    step = block_cells(feats.shape[1], grad_out.shape[1], feats.dtype, plan.chunk_rows)
    for group, index in zip(groups.groups, _batched(kmap, groups)):
        if index is None:
            k = group.offsets[0]
            src, dst = pair_slice(kmap, groups, k)
            for s in range(0, src.shape[0], step):
                a = _gather(feats, src[s : s + step], ws, "g")
                _add_tn(grad[k], a, _gather(grad_out, dst[s : s + step], ws, "y"), det)
            continue
        src, dst, valid = index
        step = max(1, plan.chunk_rows // len(group.offsets))
        acc = None
        for r0 in range(0, group.rows, step):
            s, d, v = src[:, r0 : r0 + step], dst[:, r0 : r0 + step], valid[:, r0 : r0 + step]
            a = feats.index_select(0, s.reshape(-1)).view(s.shape[0], s.shape[1], -1)
            a = a.masked_fill(~v[:, :, None], 0)
            b = grad_out.index_select(0, d.reshape(-1)).view(d.shape[0], d.shape[1], -1)
            part = fixed_order_tn(a, b) if det else torch.bmm(a.transpose(1, 2), b)
            acc = part if acc is None else acc + part
        if acc is not None:
            grad[list(group.offsets)] = acc
    return grad


class TorchConvFunction(torch.autograd.Function):
    """Autograd function of the PyTorch path: executes an :class:`ExecutionPlan` with ``backend="torch"``."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, plan: ExecutionPlan):
        ctx.kmap, ctx.plan = kmap, plan
        ctx.save_for_backward(feats, weight)
        return run_groups(feats, weight, kmap, plan, swap=False)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = run_groups(grad_out, weight.transpose(1, 2), ctx.kmap, ctx.plan, swap=True)
        if ctx.needs_input_grad[1]:
            grad_weight = weight_grad_groups(feats, grad_out, ctx.kmap, ctx.plan)
        return grad_feats, grad_weight, None, None


def torch_plan(
    kmap: KernelMap, grouping: str | GroupingConfig = "separate", chunk_rows: int = 1 << 17
) -> ExecutionPlan:
    """A PyTorch-path :class:`ExecutionPlan` of ``kmap`` for ``grouping`` (no engine config involved).

    The scatter is the default of the map's device (:func:`.execution.default_scatter`).
    """
    groups = plan_groups(kmap.counts, as_grouping(grouping), kmap.identity_offset, kmap.symmetric)
    return ExecutionPlan("torch", groups, chunk_rows, scatter=default_scatter(kmap.in_idx.device.type))


def grouped_sparse_conv(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    grouping: str | GroupingConfig = "separate",
    chunk_rows: int = 1 << 17,
) -> torch.Tensor:
    """Sparse conv on the PyTorch path with the offsets grouped by ``grouping`` (explicit settings only).

    Args:
        feats: [n_in, Cin]; weight: [K, Cin, Cout]; kmap: the conv's map.
        grouping: the strategy name or its :class:`GroupingConfig`.
        chunk_rows: most gathered rows per GEMM step (bounds the gather buffer).

    Returns:
        [n_out, Cout] in ``feats.dtype``, with autograd.
    """
    return TorchConvFunction.apply(feats, weight, kmap, torch_plan(kmap, grouping, chunk_rows))
