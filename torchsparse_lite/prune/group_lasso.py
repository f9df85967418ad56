"""Group lasso on channel groups (Wen et al. 2016; Alvarez & Salzmann 2016): train whole channels to exactly zero.

Channel ``j`` of a :class:`~.graph.ChannelGroup` owns every weight slice that removing it deletes: output
slice ``offset + j`` of each producer (weight and bias), entry ``offset + j`` of each batch norm's gamma and
beta, input slice ``offset + j`` of each consumer. The penalty is ``strength * sum_j ||w_j||_2`` over all
channels of all groups. It is minimised by proximal gradient descent: an SGD step on the task loss, then
the group soft-threshold ``w_j <- w_j * max(0, 1 - lr * strength / ||w_j||)``, which sets whole channels to
exactly zero (a channel stays at zero while the task gradient over its slices is below ``strength``). A
zero channel carries nothing (zero producer output, zero gamma and beta, zero consumer rows), so removing
it with the surgery leaves the trained network's function unchanged.

:class:`GroupNorm` (``"group_norm"``) scores channels by that norm, to select at a ratio after (or without)
the group-lasso phase.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .. import nn as tsnn
from .graph import ChannelGroup, DependencyGraph
from .importance import Importance, Scores, register_criterion
from .regression import forward_args

Slice = tuple[torch.Tensor, int, int]
"""``(parameter, dim, offset)``: the group's channels are ``parameter.narrow(dim, offset, size)``."""


def channel_slices(model: nn.Module, group: ChannelGroup, consumers: bool = True) -> list[Slice]:
    """Every parameter slice ``group`` owns (producers' outputs, batch norms, and with ``consumers`` their inputs).

    The slices without the consumers' (the *producer side*) are disjoint between the channels of all groups.
    """
    out: list[Slice] = []
    for s in group.producers:
        mod = model.get_submodule(s.name)
        out.append((mod.weight, 2 if isinstance(mod, tsnn.Conv3d) else 0, s.offset))
        if getattr(mod, "bias", None) is not None:
            out.append((mod.bias, 0, s.offset))
    for s in group.norms:
        mod = model.get_submodule(s.name)
        if getattr(mod, "affine", False):
            out += [(mod.weight, 0, s.offset), (mod.bias, 0, s.offset)]
    for s in group.consumers if consumers else ():
        out.append((model.get_submodule(s.name).weight, 1, s.offset))  # Conv3d [K, Cin, Cout], Linear [out, in]
    return out


def channel_squares(slices: list[Slice], size: int) -> torch.Tensor:
    """``[size]`` sums of squares per channel over ``slices`` (differentiable)."""
    total = 0
    for p, dim, off in slices:
        total = total + p.narrow(dim, off, size).movedim(dim, 0).reshape(size, -1).pow(2).sum(1)
    return total


def channel_norms(model: nn.Module, graph: DependencyGraph) -> dict[int, torch.Tensor]:
    """``{gid: [size]}`` L2 norm of every channel's slices (a score: higher = keep)."""
    with torch.no_grad():
        return {g.gid: channel_squares(channel_slices(model, g), g.size).sqrt().float().cpu() for g in graph.groups}


def group_lasso_penalty(model: nn.Module, graph: DependencyGraph, strength: float = 1.0) -> torch.Tensor:
    """``strength * sum`` of the channel norms over all groups (differentiable scalar)."""
    terms = [channel_squares(channel_slices(model, g), g.size).clamp_min(1e-24).sqrt().sum() for g in graph.groups]
    if not terms:
        raise ValueError("group_lasso_penalty: the graph has no prunable channel group")
    return strength * torch.stack(terms).sum()


def scale_slice_(p: torch.Tensor, dim: int, offset: int, scale: torch.Tensor) -> None:
    """Multiply ``p.narrow(dim, offset, len(scale))`` by ``scale`` [size] along ``dim``, in place."""
    shape = [1] * p.dim()
    shape[dim] = len(scale)
    p.narrow(dim, offset, len(scale)).mul_(scale.view(shape).to(p))


def proximal_step(model: nn.Module, graph: DependencyGraph, tau: float) -> None:
    """Group soft-threshold in place: every channel's slices scaled by ``max(0, 1 - tau / ||w_j||)``."""
    with torch.no_grad():
        for g in graph.groups:
            slices = channel_slices(model, g)
            norm = channel_squares(slices, g.size).sqrt()
            scale = torch.where(norm > tau, 1 - tau / norm.clamp_min(1e-30), torch.zeros_like(norm))
            for p, dim, off in slices:
                scale_slice_(p, dim, off, scale)


def train_group_lasso(
    model: nn.Module,
    graph: DependencyGraph,
    batches: Sequence[tuple[object, object]],
    loss_fn: Callable[[object, object], torch.Tensor],
    strength: float,
    steps: int,
    lr: float = 0.05,
    momentum: float = 0.9,
) -> list[dict[str, float]]:
    """Proximal SGD on ``loss + strength * sum ||w_j||`` for ``steps`` steps, cycling ``batches`` (in place).

    Returns:
        Per step ``{"loss", "penalty", "zero_channels"}`` (task loss, penalty after the step, channels at zero).
    """
    if strength < 0 or steps < 0 or not lr > 0:
        raise ValueError(f"need strength >= 0, steps >= 0, lr > 0; got {strength!r}, {steps!r}, {lr!r}")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum)
    model.train()
    history = []
    for inputs, target in itertools.islice(itertools.cycle(batches), steps):
        loss = loss_fn(model(*forward_args(inputs)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        proximal_step(model, graph, lr * strength)
        with torch.no_grad():
            penalty = float(group_lasso_penalty(model, graph, strength))
            zero = sum(int((n == 0).sum()) for n in channel_norms(model, graph).values())
        history.append({"loss": float(loss.detach()), "penalty": penalty, "zero_channels": zero})
    model.eval()
    return history


def zeroed_channels(norms: dict[int, torch.Tensor], threshold: float = 0.0) -> dict[int, torch.Tensor]:
    """``{gid: indices}`` of the channels with norm <= ``threshold``; a group keeps its largest channel at least."""
    out = {}
    for gid, n in norms.items():
        idx = (n <= threshold).nonzero().flatten()
        if len(idx) == len(n):
            idx = idx[idx != int(torch.argmax(n))]
        if len(idx):
            out[gid] = idx
    return out


class GroupNorm(Importance):
    """L2 norm of every weight slice a channel owns (producers, batch norms, consumers): :func:`channel_norms`."""

    name = "group_norm"

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        return channel_norms(model, graph)


register_criterion("group_norm", GroupNorm)
