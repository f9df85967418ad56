"""PyTorch executor of grouping plans: one ``bmm`` per group over padded gathers.

Every group ``(k_1..k_G)`` padded to ``R`` rows becomes index tensors
``src, dst`` of shape [G, R] (padding points at row 0 for gathers and at a
dummy output row for scatters), so that

    out[dst] += bmm(feats[src].view(G, R, Cin), weight[k_1..k_G])

runs all offsets of the group in one matmul. The backward pass reuses the
same indices: the input gradient is the same scatter with ``src``/``dst``
swapped and the weight transposed, the weight gradient is
``bmm(feats[src]^T, grad_out[dst])`` with padded rows zeroed.
"""

from __future__ import annotations

import torch

from ..kmap.kmap import KernelMap
from .config import GroupingConfig
from .plan import Group, GroupPlan, plan_groups

GroupIndex = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def group_indices(kmap: KernelMap, plan: GroupPlan, group: Group) -> GroupIndex:
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


def _scatter_groups(
    x: torch.Tensor,
    weight: torch.Tensor,
    plan: GroupPlan,
    index: list[GroupIndex],
    n_rows: int,
    swap: bool,
    chunk_rows: int,
) -> torch.Tensor:
    """``out[dst] += bmm(x[src], weight[group])`` for every group (``swap`` exchanges src and dst)."""
    out = x.new_zeros((n_rows + 1, weight.shape[2]))  # the last row soaks up padded cells
    if plan.identity is not None:
        out[:n_rows].addmm_(x, weight[plan.identity])
    for group, (src, dst, valid) in zip(plan.groups, index):
        if swap:
            src, dst = dst, src
        dst = torch.where(valid, dst, n_rows)
        w = weight[list(group.offsets)]
        step = max(1, chunk_rows // len(group.offsets))
        for r0 in range(0, group.rows, step):
            s, d = src[:, r0 : r0 + step], dst[:, r0 : r0 + step]
            y = torch.bmm(x.index_select(0, s.reshape(-1)).view(s.shape[0], s.shape[1], -1), w)
            out.index_add_(0, d.reshape(-1), y.view(-1, y.shape[2]))
    return out[:n_rows]


def _weight_grad_groups(
    feats: torch.Tensor,
    grad_out: torch.Tensor,
    volume: int,
    plan: GroupPlan,
    index: list[GroupIndex],
    chunk_rows: int,
) -> torch.Tensor:
    grad = feats.new_zeros((volume, feats.shape[1], grad_out.shape[1]))
    if plan.identity is not None:
        grad[plan.identity] = feats.t() @ grad_out
    for group, (src, dst, valid) in zip(plan.groups, index):
        step = max(1, chunk_rows // len(group.offsets))
        acc = None
        for r0 in range(0, group.rows, step):
            s, d, v = src[:, r0 : r0 + step], dst[:, r0 : r0 + step], valid[:, r0 : r0 + step]
            a = feats.index_select(0, s.reshape(-1)).view(s.shape[0], s.shape[1], -1)
            a = a.masked_fill(~v[:, :, None], 0)
            b = grad_out.index_select(0, d.reshape(-1)).view(d.shape[0], d.shape[1], -1)
            part = torch.bmm(a.transpose(1, 2), b)
            acc = part if acc is None else acc + part
        if acc is not None:
            grad[list(group.offsets)] = acc
    return grad


class GroupedConvFunction(torch.autograd.Function):
    """Autograd function running a :class:`GroupPlan` with batched matmuls."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, plan: GroupPlan, chunk_rows: int):
        index = [group_indices(kmap, plan, g) for g in plan.groups]
        ctx.kmap, ctx.plan, ctx.index, ctx.chunk_rows = kmap, plan, index, chunk_rows
        ctx.save_for_backward(feats, weight)
        return _scatter_groups(feats, weight, plan, index, kmap.n_out, False, chunk_rows)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = _scatter_groups(
                grad_out, weight.transpose(1, 2), ctx.plan, ctx.index, ctx.kmap.n_in, True, ctx.chunk_rows
            )
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_grad_groups(feats, grad_out, weight.shape[0], ctx.plan, ctx.index, ctx.chunk_rows)
        return grad_feats, grad_weight, None, None, None


def grouped_sparse_conv(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    grouping: GroupingConfig,
    chunk_rows: int = 1 << 17,
) -> torch.Tensor:
    """Sparse conv on the PyTorch path with the offsets grouped by ``grouping``.

    Args:
        feats: [n_in, Cin]; weight: [K, Cin, Cout]; kmap: the conv's map.
        grouping: the strategy and its parameters.
        chunk_rows: most gathered rows per bmm step (bounds the gather buffer).

    Returns:
        [n_out, Cout] in ``feats.dtype``, with autograd.
    """
    plan = plan_groups(kmap.counts, grouping, kmap.identity_offset, kmap.symmetric)
    return GroupedConvFunction.apply(feats, weight, kmap, plan, chunk_rows)
