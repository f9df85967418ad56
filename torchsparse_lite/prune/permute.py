"""Channel permutations that let an N:M mask keep more weight magnitude (as NVIDIA ASP does).

The N:M mask of a consumer groups *consecutive* input channels; reordering the
channels of a group (and, to keep the function, every producer, norm and
consumer slot of that group, see :mod:`.surgery`) changes which channels
compete inside one run of M. A greedy swap search exchanges channels between
runs whenever the total kept magnitude ``sum |W| * mask`` of every consumer grows.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as tsnn
from .graph import ChannelGroup, DependencyGraph
from .surgery import apply_selection


def kept_magnitude(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Sum over rows of the ``n`` largest |w| in every run of ``m`` columns; w: [..., R, C], C % m == 0."""
    blocks = w.abs().reshape(*w.shape[:-1], w.shape[-1] // m, m)
    return blocks.topk(n, dim=-1).values.sum((-1, -2, -3))


def _consumer_matrix(model: nn.Module, group: ChannelGroup, m: int) -> torch.Tensor | None:
    """|W| of all consumers restricted to the group's input channels: [R, size], or None if unaligned."""
    if group.size % m or not group.consumers:
        return None
    rows = []
    for slot in group.consumers:
        if slot.offset % m:
            return None
        mod = model.get_submodule(slot.name)
        w = mod.weight.detach().float().cpu()
        if isinstance(mod, tsnn.Conv3d):
            rows.append(w[:, slot.offset : slot.offset + group.size].transpose(1, 2).reshape(-1, group.size))
        else:
            rows.append(w[:, slot.offset : slot.offset + group.size])
    return torch.cat(rows).abs()


def search_permutation(
    w: torch.Tensor, n: int = 2, m: int = 4, max_sweeps: int = 3, max_pairs: int = 4000, seed: int = 0
) -> torch.Tensor:
    """Greedy channel-swap search maximising :func:`kept_magnitude` of ``w`` [R, C] (C % m == 0).

    Each sweep visits pairs of runs (at most ``max_pairs``, sampled when there
    are more) and applies the best of the m*m swaps between them if it gains.

    Returns:
        perm [C]: column ``i`` of the permuted matrix is column ``perm[i]`` of ``w``.
    """
    c = w.shape[1]
    if c % m:
        raise ValueError(f"channel count {c} is not a multiple of m={m}")
    stripes = c // m
    perm = torch.arange(c)
    cur = w.clone()
    gen = torch.Generator().manual_seed(seed)
    ia, ib = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    ia, ib = ia.flatten(), ib.flatten()
    for _ in range(max_sweeps):
        pairs = torch.combinations(torch.arange(stripes), 2)
        if len(pairs) > max_pairs:
            pairs = pairs[torch.randperm(len(pairs), generator=gen)[:max_pairs]]
        improved = False
        for sa, sb in pairs.tolist():
            A = cur[:, sa * m : (sa + 1) * m]
            B = cur[:, sb * m : (sb + 1) * m]
            base = kept_magnitude(A, n, m) + kept_magnitude(B, n, m)
            A2 = A.unsqueeze(0).repeat(m * m, 1, 1)
            B2 = B.unsqueeze(0).repeat(m * m, 1, 1)
            idx = torch.arange(m * m)
            A2[idx, :, ia] = B[:, ib].t()
            B2[idx, :, ib] = A[:, ia].t()
            gain = kept_magnitude(A2, n, m) + kept_magnitude(B2, n, m) - base
            best = int(gain.argmax())
            if float(gain[best]) > 1e-6 * float(base.clamp(min=1e-12)):
                a, b = sa * m + int(ia[best]), sb * m + int(ib[best])
                cur[:, [a, b]] = cur[:, [b, a]]
                perm[[a, b]] = perm[[b, a]]
                improved = True
        if not improved:
            break
    return perm


def permute_for_nm(
    model: nn.Module, graph: DependencyGraph, n: int = 2, m: int = 4, max_sweeps: int = 3
) -> tuple[nn.Module, dict[str, dict[str, float]]]:
    """Reorder every permutable group's channels to raise the N:M-kept magnitude; the function is unchanged.

    Groups whose size or consumer offsets are not multiples of ``m`` stay as they are.

    Returns:
        (a permuted copy of ``model``, ``{group name: {"before": kept, "after": kept}}``).
    """
    selection = {}
    info = {}
    for g in graph.groups:
        w = _consumer_matrix(model, g, m)
        if w is None:
            continue
        perm = search_permutation(w, n, m, max_sweeps)
        before, after = float(kept_magnitude(w, n, m)), float(kept_magnitude(w[:, perm], n, m))
        info[g.name] = {"before": before, "after": after}
        if after > before:
            selection[g.gid] = perm
    return apply_selection(model, graph, selection).model, info
