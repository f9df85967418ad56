"""ThiNet channel selection (Luo et al. 2017): prune the channels the next layers' outputs miss least.

Channel ``j`` of a group contributes ``z_j = sum_k x_j[nbr_k(n)] * W[k, j, :]`` to output row ``n`` of every
consumer (every conv / linear reading the group's channel space, at its offset in a U-Net concatenation; a
residual group's consumers in every block it flows through). Removing a set ``T`` changes those outputs by
``sum_{j in T} z_j``, whose squared norm over sampled rows and output channels is ``1' G_TT 1`` with the Gram
matrix ``G = Z'Z`` of the contributions: :func:`contribution_grams` accumulates ``G`` per group with forward
hooks, :func:`greedy_removal_order` grows ``T`` one channel at a time by the least increase
``G_jj + 2 sum_{i in T} G_ij`` (channels that cancel each other go together, which magnitude cannot see).
The least-squares refit of the consumers afterwards is :mod:`.reconstruct`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .graph import DependencyGraph
from .importance import Importance, Scores, register_criterion
from .regression import forward_args, layer_weight, output_rows, patches, sample_rows


def _gram_hook(
    slots: list[tuple[int, int, int]], grams: dict[int, torch.Tensor], samples: int, seed: Callable[[], int]
) -> Callable:
    """Forward hook adding the contributions of each ``(gid, offset, size)`` slot to ``grams[gid]``."""

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        rows = sample_rows(output_rows(output), samples, seed())
        x = patches(module, args[0], rows).double()  # [S, K, Cin]
        w = layer_weight(module).detach().double()  # [K, Cin, Cout]
        for gid, off, size in slots:
            z = torch.einsum("skj,kjo->soj", x[:, :, off : off + size], w[:, off : off + size])
            z = z.reshape(-1, size)  # [S * Cout, size]: one row per (voxel, output channel)
            grams[gid] += (z.t() @ z).cpu()

    return hook


def contribution_grams(
    model: nn.Module,
    graph: DependencyGraph,
    batches: Iterable[tuple[object, object]],
    samples: int = 256,
    seed: int = 0,
) -> dict[int, torch.Tensor]:
    """``{gid: [size, size]}`` float64 Gram matrices of each group's channel contributions to its consumers.

    Args:
        model: the traced network (run in eval mode without gradients; not modified).
        graph: its dependency graph; groups without a consumer are left out.
        batches: ``(input, target)`` pairs (the targets are not used).
        samples: output rows sampled per consumer and batch (all rows when fewer), seeded by ``seed``.
    """
    by_layer: dict[str, list[tuple[int, int, int]]] = {}
    for g in graph.groups:
        for s in g.consumers:
            by_layer.setdefault(s.name, []).append((g.gid, s.offset, g.size))
    grams = {g.gid: torch.zeros(g.size, g.size, dtype=torch.float64) for g in graph.groups if g.consumers}
    calls = [0]

    def next_seed() -> int:
        calls[0] += 1
        return seed * 1_000_003 + calls[0]

    hooks = [model.get_submodule(n).register_forward_hook(_gram_hook(sl, grams, samples, next_seed))
             for n, sl in by_layer.items()]  # fmt: skip
    was = model.training
    model.eval()
    n = 0
    try:
        with torch.no_grad():
            for inputs, _ in batches:
                model(*forward_args(inputs))
                n += 1
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError("batches is empty; give at least one (input, target) pair")
    return grams


def greedy_removal_order(gram: torch.Tensor) -> torch.Tensor:
    """ThiNet's greedy order ``[size]``: each next channel adds the least to ``1' G_TT 1`` (``gram`` [size, size])."""
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be square [size, size], got {list(gram.shape)}")
    g = gram.double()
    n = g.shape[0]
    cross = torch.zeros(n, dtype=torch.float64)  # sum over the removed set T of G[:, i]
    free = torch.ones(n, dtype=torch.bool)
    order = []
    for _ in range(n):
        cost = torch.where(free, g.diagonal() + 2 * cross, torch.inf)
        j = int(torch.argmin(cost))
        order.append(j)
        free[j] = False
        cross += g[:, j]
    return torch.tensor(order, dtype=torch.long)


def removal_ranks(gram: torch.Tensor) -> torch.Tensor:
    """Scores ``[size]`` (1 .. size): the position in :func:`greedy_removal_order`, first removed lowest."""
    order = greedy_removal_order(gram)
    ranks = torch.empty(len(order))
    ranks[order] = torch.arange(1, len(order) + 1, dtype=torch.float32)
    return ranks


class ThiNet(Importance):
    """ThiNet's greedy selection as a criterion (``"thinet"``): scores are :func:`removal_ranks` per group.

    ``mode="local"`` removes exactly the greedy set of each group at its ratio (global mode ranks the
    normalised positions, i.e. nearly one ratio everywhere). ``samples`` output rows per consumer and batch.
    Pair it with the least-squares refit of :func:`~.reconstruct.reconstruct_consumers` (config ``reconstruct``).
    """

    name = "thinet"
    needs_data = True

    def __init__(self, samples: int = 256, seed: int = 0) -> None:
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        self.samples, self.seed = samples, seed

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        grams = contribution_grams(model, graph, batches, self.samples, self.seed)
        return {gid: removal_ranks(gram) for gid, gram in grams.items()}


register_criterion("thinet", ThiNet)
