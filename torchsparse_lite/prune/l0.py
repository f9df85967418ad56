"""L0 regularisation with hard-concrete channel gates (Louizos, Welling & Kingma 2018), on channel groups.

Every channel ``j`` of every :class:`~.graph.ChannelGroup` gets a gate ``z_j in [0, 1]`` with a learned
``log_alpha_j``. In training ``z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) * (zeta - gamma)
+ gamma, 0, 1)``, ``u ~ U(0, 1)`` (one draw per step, shared by every read of the channel); the probability
that a gate is non-zero, ``sigmoid(log_alpha - beta * log(-gamma / zeta))``, is differentiable, and its mean
over all channels (the expected L0 norm over the channel count) is pulled to ``1 - ratio`` by
``strength * (E[keep] - (1 - ratio))^2``. At test time the gate is deterministic,
``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``, and, as in CoFi (Xia et al. 2022), each group
closes exactly as many gates as its expected number of zeros, ``round(sum_j P(z_j = 0))``, the lowest
``log_alpha`` first: the expected L0 the penalty controls is then the channel count removed (the deterministic
formula alone keeps gates down to keep probability ~0.3 open and closes some above it). A kept gate whose
deterministic value is zero takes its mean over seeded draws instead.

A gate multiplies the channel where every consumer reads it (forward pre-hooks on the consumers), i.e.
after the producers' batch norms and activations, on every path of a residual add or concatenation.
:func:`fold_gates` multiplies the deterministic gates into the consumers' input rows (exact, the layers are
linear in their inputs); closed gates leave zero rows, so removing those channels changes nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .graph import DependencyGraph
from .group_lasso import scale_slice_, zeroed_channels
from .regression import feats_of, forward_args

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcreteGates(nn.Module):
    """One hard-concrete gate per channel of every group of ``graph``; ``current`` holds the gates in use.

    Args:
        graph: the dependency graph (gates ``[size]`` per group id).
        init: initial ``log_alpha`` (3.0: almost every gate open, keep probability ~0.99).
    """

    def __init__(self, graph: DependencyGraph, init: float = 3.0, beta: float = BETA) -> None:
        super().__init__()
        self.gids = [g.gid for g in graph.groups]
        self.log_alpha = nn.ParameterList([nn.Parameter(torch.full((g.size,), float(init))) for g in graph.groups])
        self.beta = beta
        self.current: dict[int, torch.Tensor] = {}
        self.total = sum(g.size for g in graph.groups)

    def sample(self, generator: torch.Generator | None = None) -> None:
        """Draw training gates (differentiable in ``log_alpha``) into ``current``."""
        for gid, la in zip(self.gids, self.log_alpha):
            u = torch.rand(la.shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(la)
            s = torch.sigmoid((u.log() - (1 - u).log() + la) / self.beta)
            self.current[gid] = (s * (ZETA - GAMMA) + GAMMA).clamp(0, 1)

    def deterministic(self) -> dict[int, torch.Tensor]:
        """``{gid: [size]}`` test-time gates (no gradient)."""
        with torch.no_grad():
            return {
                gid: (torch.sigmoid(la) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
                for gid, la in zip(self.gids, self.log_alpha)
            }

    def keep_probability(self) -> list[torch.Tensor]:
        """``P(z != 0)`` ``[size]`` per group, in ``gids`` order (differentiable)."""
        shift = self.beta * math.log(-GAMMA / ZETA)
        return [torch.sigmoid(la - shift) for la in self.log_alpha]

    def expected_keep(self) -> torch.Tensor:
        """Expected fraction of non-zero gates over all channels (differentiable scalar)."""
        return torch.cat(self.keep_probability()).sum() / self.total

    def mean(self, draws: int = 256, seed: int = 0) -> dict[int, torch.Tensor]:
        """``{gid: [size]}`` mean training gate over ``draws`` seeded draws (positive wherever P(z != 0) > 0)."""
        gen = torch.Generator().manual_seed(seed)
        total = {gid: torch.zeros_like(la) for gid, la in zip(self.gids, self.log_alpha)}
        current = self.current
        with torch.no_grad():
            for _ in range(draws):
                self.sample(gen)
                for gid in self.gids:
                    total[gid] += self.current[gid]
        self.current = current
        return {gid: t / draws for gid, t in total.items()}

    def closed_fraction(self) -> float:
        """Fraction of all channels :meth:`final` closes (without computing the gates)."""
        with torch.no_grad():
            n = sum(len(expected_zeros(k, k)) for k in self.keep_probability())
        return n / self.total

    def final(self) -> dict[int, torch.Tensor]:
        """``{gid: [size]}`` test-time gates: each group's expected number of zeros closed (see the module doc)."""
        gates, mean = self.deterministic(), self.mean()
        with torch.no_grad():
            for gid, la, keep in zip(self.gids, self.log_alpha, self.keep_probability()):
                z = torch.where(gates[gid] > 0, gates[gid], mean[gid])
                z[expected_zeros(keep, la)] = 0
                gates[gid] = z
        return gates


def expected_zeros(keep: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Indices of a group's ``round(sum_j (1 - keep_j))`` lowest-``order`` channels (at most all but one).

    Args:
        keep: ``[size]`` probabilities that the channels stay; order: ``[size]`` scores, lowest closed first.
    """
    n = min(int(round(float((1 - keep.detach()).sum()))), len(keep) - 1)
    return torch.argsort(order.detach(), stable=True)[:n]


def _multiplier(width: int, slots: list[tuple[int, int, int]], gates: dict[int, torch.Tensor]) -> torch.Tensor:
    """``[width]`` input scale of one consumer: the gates at their slots, ones elsewhere."""
    parts, pos = [], 0
    ref = next(iter(gates.values()))
    for gid, off, size in sorted(slots, key=lambda s: s[1]):
        parts += [ref.new_ones(off - pos), gates[gid]]
        pos = off + size
    parts.append(ref.new_ones(width - pos))
    return torch.cat(parts)


def attach_gates(model: nn.Module, graph: DependencyGraph, gates: nn.Module) -> list:
    """Pre-hooks scaling every consumer's input by ``gates.current``; returns the handles (``.remove()`` them).

    ``gates`` is anything whose ``current`` is ``{gid: [size]}`` (:class:`HardConcreteGates`,
    :class:`~.scp.SoftChannelMasks`), read at every forward.
    """
    by_layer: dict[str, list[tuple[int, int, int]]] = {}
    for g in graph.groups:
        for s in g.consumers:
            by_layer.setdefault(s.name, []).append((g.gid, s.offset, g.size))

    def make_hook(slots: list[tuple[int, int, int]]):
        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            f = feats_of(x)
            scaled = f * _multiplier(f.shape[1], slots, gates.current).to(f.dtype)
            return (x.replace(scaled) if hasattr(x, "replace") else scaled, *args[1:])

        return hook

    return [model.get_submodule(n).register_forward_pre_hook(make_hook(s)) for n, s in by_layer.items()]


def fold_gates(model: nn.Module, graph: DependencyGraph, gates: dict[int, torch.Tensor]) -> None:
    """Multiply ``gates[gid]`` into the input rows of every consumer of each group (in place)."""
    with torch.no_grad():
        for g in graph.groups:
            if g.gid not in gates:
                continue
            for s in g.consumers:  # Conv3d [K, Cin, Cout] / Linear [out, in]: inputs on dim 1
                scale_slice_(model.get_submodule(s.name).weight, 1, s.offset, gates[g.gid])


def closed_channels(gates: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """``{gid: indices}`` of the closed (zero) gates; a group keeps its most open channel at least."""
    return zeroed_channels(gates, 0.0)


def train_with_gates(
    model: nn.Module,
    graph: DependencyGraph,
    gates: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Sequence[tuple[object, object]],
    loss_fn: Callable[[object, object], torch.Tensor],
    ratio: float,
    strength: float,
    steps: int,
    seed: int = 0,
) -> list[dict[str, float]]:
    """The training loop of every gate law (L0 here, SCP's soft masks): ``model`` trained in place.

    ``gates`` (``sample(generator)``, ``expected_keep()``, ``closed_fraction()`` and the ``current`` gates the
    consumers' pre-hooks read) is drawn anew each step; the loss is ``task + strength * (E[keep] - (1 -
    ratio))^2``; ``opt`` holds the weights and the gate parameters. The hooks are removed at the end.

    Returns:
        Per step ``{"loss", "penalty", "expected_keep", "closed"}``: task loss, sparsity penalty, expected
        kept fraction, fraction of channels the final gates close.
    """
    gen = torch.Generator().manual_seed(seed)
    handles = attach_gates(model, graph, gates)
    history = []
    model.train()
    try:
        for inputs, target in itertools.islice(itertools.cycle(batches), steps):
            gates.sample(gen)
            task = loss_fn(model(*forward_args(inputs)), target)
            keep = gates.expected_keep()
            penalty = strength * (keep - (1 - ratio)) ** 2
            opt.zero_grad(set_to_none=True)
            (task + penalty).backward()
            opt.step()
            history.append({"loss": float(task.detach()), "penalty": float(penalty.detach()),
                            "expected_keep": float(keep.detach()), "closed": gates.closed_fraction()})  # fmt: skip
    finally:
        for h in handles:
            h.remove()
        model.eval()
    return history


def train_l0(
    model: nn.Module,
    graph: DependencyGraph,
    batches: Sequence[tuple[object, object]],
    loss_fn: Callable[[object, object], torch.Tensor],
    ratio: float,
    strength: float = 10.0,
    steps: int = 100,
    lr: float = 0.005,
    gate_lr: float = 0.1,
    seed: int = 0,
) -> tuple[HardConcreteGates, list[dict[str, float]]]:
    """Train ``model`` (in place) with gates on every group toward removing ``ratio`` of the channels.

    Adam on the weights (``lr``) and the gates (``gate_lr``), loss ``task + strength * (E[keep] - (1 -
    ratio))^2``, ``steps`` steps cycling ``batches``; the gates' hooks are removed at the end.

    Returns:
        The gates, and per step the record of :func:`train_with_gates`.
    """
    if not 0 <= ratio < 1 or strength < 0 or steps < 0:
        raise ValueError(f"need 0 <= ratio < 1, strength >= 0, steps >= 0; got {ratio!r}, {strength!r}, {steps!r}")
    gates = HardConcreteGates(graph).to(next(model.parameters()).device)
    opt = torch.optim.Adam([{"params": list(model.parameters()), "lr": lr},
                            {"params": list(gates.parameters()), "lr": gate_lr}])  # fmt: skip
    history = train_with_gates(model, graph, gates, opt, batches, loss_fn, ratio, strength, steps, seed)
    return gates, history
