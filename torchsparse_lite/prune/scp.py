"""Soft channel pruning with differentiable, operation-aware masks (SCP; Kang & Han 2020), on channel groups.

A channel that its batch norm and ReLU switch off carries nothing. Batch norm normalises its input to mean 0
and variance 1, so (taking that as ``N(0, 1)``) channel ``c``'s BN output is ``y_c ~ N(beta_c, gamma_c^2)`` and
the ReLU after it passes a non-zero value with probability

    ``p_c = P(y_c > 0) = Phi(beta_c / |gamma_c|)``.

A group written by several (conv, BN) pairs (the two branches of a residual add, or the blocks of an
identity-shortcut chain) carries zero everywhere when every one of its BN outputs is ``<= 0`` (along the
chain ``relu(y + 0) = 0`` for ``y <= 0``); taking that as "off" and the BN outputs as independent,
``p_c = 1 - prod_s Phi(-beta_s / |gamma_s|)``. The probability is a differentiable function of the gammas and
betas, so the network learns which channels to switch off through its own BN parameters.

Each channel gets a soft mask ``m_c``, a relaxed Bernoulli(``p_c``) sample (binary Gumbel-softmax / concrete
at temperature ``tau``): ``m_c = sigmoid((logit(p_c) + log u - log(1 - u)) / tau)``, ``u ~ U(0, 1)``, one
draw per step shared by every read of the channel; ``P(m_c > 1/2) = p_c`` exactly, and ``m_c`` tends to
Bernoulli(``p_c``) as ``tau -> 0``. The loss is ``task + strength * (mean_c p_c - (1 - ratio))^2``: the
expected kept fraction is pulled to the target. (The paper's sparsity loss pushes the off probabilities up
with a fixed weight and a confidence margin; a target, as in :mod:`.l0`, makes a run meet ``ratio``.)

A group without a batch norm followed by a ReLU has no such law: its channels get a learned logit instead
(``p_c = sigmoid(theta_c)``, ``theta_c = 3`` at the start), trained like the BN parameters.

Masks multiply the channels where every consumer reads them (:func:`~.l0.attach_gates`). At the end each
group closes its expected number of off channels, ``round(sum_c (1 - p_c))``, the least likely first
(:func:`~.l0.expected_zeros`), and opens the rest: the final masks are 0 / 1, :func:`~.l0.fold_gates` folds
them into the consumers exactly and the closed channels are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .graph import ChannelGroup, DependencyGraph
from .l0 import expected_zeros, train_with_gates


def _bn_law(model: nn.Module, group: ChannelGroup) -> list[tuple[nn.Parameter, nn.Parameter, int]]:
    """``(gamma, beta, offset)`` of the group's batch norms, or ``[]`` when it has no BN + ReLU law."""
    norms = [model.get_submodule(s.name) for s in group.norms]
    if not norms or not group.relus or not all(getattr(n, "affine", False) for n in norms):
        return []
    return [(n.weight, n.bias, s.offset) for n, s in zip(norms, group.norms)]


Z_MAX = 12.0  # Phi(-12) ~ 2e-33: a channel this far is on (or off) for good


class SoftChannelMasks(nn.Module):
    """A soft mask per channel of every group of ``graph``; ``current`` holds the masks in use.

    Args:
        model: the network whose batch norms drive the masks (their parameters are not registered here).
        graph: its dependency graph; temperature: ``tau`` of the relaxed Bernoulli.
        init: initial logit of the channels without a BN law.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, temperature: float = 0.5, init: float = 3.0) -> None:
        super().__init__()
        self.gids = [g.gid for g in graph.groups]
        self.sizes = {g.gid: g.size for g in graph.groups}
        self.law = {g.gid: _bn_law(model, g) for g in graph.groups}
        self.logits = nn.ParameterDict({str(g.gid): nn.Parameter(torch.full((g.size,), float(init)))
                                        for g in graph.groups if not self.law[g.gid]})  # fmt: skip
        self.temperature = temperature
        self.current: dict[int, torch.Tensor] = {}
        self.total = sum(self.sizes.values())

    def mask_parameters(self) -> list[nn.Parameter]:
        """What the masks depend on: the groups' BN gammas and betas and the fallback logits."""
        bn = {id(t): t for law in self.law.values() for gamma, beta, _ in law for t in (gamma, beta)}
        return list(bn.values()) + list(self.logits.values())

    def logit(self, gid: int) -> torch.Tensor:
        """``logit(p)`` ``[size]`` of group ``gid`` (differentiable; ``log p - log(1 - p)`` computed stably)."""
        if not self.law[gid]:
            return self.logits[str(gid)]
        size = self.sizes[gid]
        # z = beta / |gamma| bounded to [-Z_MAX, Z_MAX]: a converged net has BN gammas near 0, where the raw
        # ratio (and log_ndtr's gradient) overflows to NaN; Phi is saturated beyond the bound anyway
        log_off = sum(torch.special.log_ndtr(-(beta[off : off + size] / gamma[off : off + size].abs().clamp_min(1e-6))
                                             .clamp(-Z_MAX, Z_MAX)) for gamma, beta, off in self.law[gid])  # fmt: skip
        return (-torch.expm1(log_off)).clamp_min(1e-30).log() - log_off

    def keep_probability(self) -> list[torch.Tensor]:
        """``p`` ``[size]`` per group, in ``gids`` order (differentiable)."""
        return [torch.sigmoid(self.logit(gid)) for gid in self.gids]

    def expected_keep(self) -> torch.Tensor:
        """Mean ``p`` over all channels: the expected kept fraction (differentiable scalar)."""
        return torch.cat(self.keep_probability()).sum() / self.total

    def sample(self, generator: torch.Generator | None = None) -> None:
        """Draw the relaxed Bernoulli masks (differentiable in the mask parameters) into ``current``."""
        for gid in self.gids:
            la = self.logit(gid)
            u = torch.rand(la.shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(la)
            self.current[gid] = torch.sigmoid((la + u.log() - (1 - u).log()) / self.temperature)

    def final(self) -> dict[int, torch.Tensor]:
        """``{gid: [size]}`` 0 / 1 masks: each group's expected number of off channels closed (module doc)."""
        out = {}
        with torch.no_grad():
            for gid, keep in zip(self.gids, self.keep_probability()):
                mask = torch.ones_like(keep)
                mask[expected_zeros(keep, self.logit(gid))] = 0
                out[gid] = mask
        return out

    def closed_fraction(self) -> float:
        """Fraction of all channels :meth:`final` closes."""
        with torch.no_grad():
            return sum(len(expected_zeros(k, k)) for k in self.keep_probability()) / self.total


def train_scp(
    model: nn.Module,
    graph: DependencyGraph,
    batches: Sequence[tuple[object, object]],
    loss_fn: Callable[[object, object], torch.Tensor],
    ratio: float,
    strength: float = 10.0,
    steps: int = 100,
    lr: float = 0.005,
    mask_lr: float = 0.05,
    temperature: float = 0.5,
    seed: int = 0,
) -> tuple[SoftChannelMasks, list[dict[str, float]]]:
    """Train ``model`` (in place) with soft masks on every group toward removing ``ratio`` of the channels.

    Adam on the weights (``lr``) and the mask parameters (``mask_lr``: the groups' BN gammas and betas, the
    fallback logits), loss ``task + strength * (mean p - (1 - ratio))^2``, ``steps`` steps cycling
    ``batches``; the masks' hooks are removed at the end.

    Returns:
        The masks, and per step the record of :func:`~.l0.train_with_gates` (``closed``: the fraction
        :meth:`~SoftChannelMasks.final` closes).
    """
    if not 0 <= ratio < 1 or strength < 0 or steps < 0 or not temperature > 0:
        raise ValueError(f"need 0 <= ratio < 1, strength >= 0, steps >= 0, temperature > 0; got {ratio!r}, "
                         f"{strength!r}, {steps!r}, {temperature!r}")  # fmt: skip
    masks = SoftChannelMasks(model, graph, temperature).to(next(model.parameters()).device)
    own = {id(p) for p in masks.mask_parameters()}
    weights = [p for p in model.parameters() if id(p) not in own]
    opt = torch.optim.Adam([{"params": weights, "lr": lr}, {"params": masks.mask_parameters(), "lr": mask_lr}])
    history = train_with_gates(model, graph, masks, opt, batches, loss_fn, ratio, strength, steps, seed)
    return masks, history
