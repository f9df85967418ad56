"""Channel importance criteria, one small class each, one interface.

``criterion(model, graph, batches=None, loss_fn=None) -> {group id: scores [size]}``:
a higher score means "keep". Criteria that need data (Taylor, APoZ, Fisher)
run ``model`` over ``batches`` (pairs ``(input, target)``) with hooks; the
others read weights only. A group a criterion cannot score (BN-γ without a
batch norm, APoZ without a ReLU) is left out of the result and is not pruned.

Producer filters: output column ``j`` of a conv weight [K, Cin, Cout] (all K*Cin
entries) or row ``j`` of a linear weight; a group with several producers (a
residual add) concatenates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .. import nn as tsnn
from ..tensor import SparseTensor
from .graph import ChannelGroup, DependencyGraph

Scores = dict[int, torch.Tensor]
Batches = Iterable[tuple[object, object]]
LossFn = Callable[[object, object], torch.Tensor]


def _out_slice(module: nn.Module, offset: int, size: int, tensor: torch.Tensor) -> torch.Tensor:
    """Producer-side [size, D] view of ``tensor`` (a weight or gradient of ``module``)."""
    if isinstance(module, tsnn.Conv3d):
        return tensor[:, :, offset : offset + size].reshape(-1, size).t()
    return tensor[offset : offset + size].reshape(size, -1)


def producer_filters(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """[size, D] filters of every producer of ``group``, concatenated along D."""
    parts = []
    for slot in group.producers:
        mod = model.get_submodule(slot.name)
        parts.append(_out_slice(mod, slot.offset, group.size, mod.weight.detach()))
        if getattr(mod, "bias", None) is not None:
            parts.append(mod.bias.detach()[slot.offset : slot.offset + group.size, None])
    return torch.cat(parts, 1).float().cpu()


class Importance:
    """Base class: ``__call__`` returns ``{group id: [size] scores}`` (higher = keep)."""

    name = "base"
    needs_data = False

    def __call__(
        self, model: nn.Module, graph: DependencyGraph, batches: Batches | None = None, loss_fn: LossFn | None = None
    ) -> Scores:
        if self.needs_data and batches is None:
            raise ValueError(f"criterion {self.name!r} needs data: pass batches=[(input, target), ...]")
        return self.compute(model, graph, batches, loss_fn)

    def compute(self, model, graph, batches, loss_fn) -> Scores:  # pragma: no cover - abstract
        raise NotImplementedError


class Magnitude(Importance):
    """L1 (``p=1``) or L2 (``p=2``) norm of each channel's filters (Li et al. 2017)."""

    def __init__(self, p: int = 1) -> None:
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p = p
        self.name = f"l{p}"

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        return {g.gid: producer_filters(model, g).norm(p=self.p, dim=1) for g in graph.groups}


class BNScale(Importance):
    """|γ| of the batch norms over each channel (Network Slimming, Liu et al. 2017).

    Train with :func:`bn_l1_penalty` added to the loss to push unneeded γ to zero.
    """

    name = "bn"

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        out = {}
        for g in graph.groups:
            gammas = [
                model.get_submodule(s.name).weight.detach()[s.offset : s.offset + g.size].abs().float().cpu()
                for s in g.norms
                if model.get_submodule(s.name).affine
            ]
            if gammas:
                out[g.gid] = torch.stack(gammas).sum(0)
        return out


def bn_l1_penalty(model: nn.Module, strength: float = 1e-4) -> torch.Tensor:
    """``strength * sum |γ|`` over every affine batch norm: add it to the training loss."""
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength!r}")
    terms = [m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm1d) and m.affine]
    if not terms:
        raise ValueError("bn_l1_penalty: the model has no affine BatchNorm layer")
    return strength * torch.stack(terms).sum()


class FPGM(Importance):
    """Distance to the geometric median (He et al. 2019): filters near it are redundant.

    Score of filter ``j`` = sum of Euclidean distances to all filters of the
    group; the minimiser of that sum is the filter closest to the geometric
    median and is pruned first.
    """

    name = "fpgm"

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        out = {}
        for g in graph.groups:
            f = producer_filters(model, g).double()
            out[g.gid] = torch.cdist(f, f).sum(1).float()
        return out


class RandomImportance(Importance):
    """Uniform random scores (a baseline); ``seed`` makes it repeatable."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        gen = torch.Generator().manual_seed(self.seed)
        return {g.gid: torch.rand(g.size, generator=gen) for g in graph.groups}


def _feats(x: object) -> torch.Tensor:
    return x.feats if isinstance(x, SparseTensor) else x  # type: ignore[return-value]


def run_batches(model: nn.Module, batches: Batches, loss_fn: LossFn | None, backward: bool) -> int:
    """Forward (and backward) every batch in eval mode; returns the batch count."""
    was_training = model.training
    model.eval()
    n = 0
    try:
        for inputs, target in batches:
            args = inputs if isinstance(inputs, tuple) else (inputs,)
            if backward:
                if loss_fn is None:
                    raise ValueError("this criterion needs loss_fn(output, target) -> scalar loss")
                model.zero_grad(set_to_none=True)
                loss_fn(model(*args), target).backward()
            else:
                with torch.no_grad():
                    model(*args)
            n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("batches is empty; give at least one (input, target) pair")
    return n


def _hooked_run(
    model: nn.Module, hooks: list[tuple[str, Callable]], batches: Batches, loss_fn: LossFn | None, backward: bool
) -> None:
    """Run the batches with forward hooks ``(submodule name, hook)`` attached, then detach them."""
    handles = [model.get_submodule(name).register_forward_hook(hook) for name, hook in hooks]
    try:
        run_batches(model, batches, loss_fn, backward=backward)
    finally:
        for h in handles:
            h.remove()
        if backward:
            model.zero_grad(set_to_none=True)


class Taylor(Importance):
    """First-order Taylor (Molchanov et al. 2017): ``|sum over voxels of a * dL/da|`` per batch, summed.

    ``a`` is each producer's output; groups with several producers add them.
    """

    name = "taylor"
    needs_data = True

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        acc = {g.gid: torch.zeros(g.size) for g in graph.groups}

        def make_hook(gid: int, offset: int, size: int):
            def hook(module, args, output):
                a = _feats(output)
                if not a.requires_grad:
                    return

                def on_grad(grad: torch.Tensor) -> None:
                    prod = (a.detach() * grad)[:, offset : offset + size].sum(0).abs()
                    acc[gid] += prod.float().cpu()

                a.register_hook(on_grad)

            return hook

        hooks = [(s.name, make_hook(g.gid, s.offset, g.size)) for g in graph.groups for s in g.producers]
        _hooked_run(model, hooks, batches, loss_fn, backward=True)
        return acc


class APoZ(Importance):
    """Average Percentage of Zeros after ReLU (Hu et al. 2016); score = 1 - APoZ.

    Only groups followed by a ReLU layer are scored (mean over their ReLUs).
    """

    name = "apoz"
    needs_data = True

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        zeros: dict[int, torch.Tensor] = {}
        rows: dict[int, int] = {}

        def make_hook(gid: int, offset: int, size: int):
            def hook(module, args, output):
                a = _feats(output)[:, offset : offset + size]
                zeros[gid] = zeros.get(gid, torch.zeros(size)) + (a == 0).sum(0).float().cpu()
                rows[gid] = rows.get(gid, 0) + a.shape[0]

            return hook

        hooks = [(s.name, make_hook(g.gid, s.offset, g.size)) for g in graph.groups for s in g.relus]
        _hooked_run(model, hooks, batches, loss_fn, backward=False)
        return {gid: 1.0 - zeros[gid] / max(rows[gid], 1) for gid in zeros}


class Fisher(Importance):
    """Diagonal-Hessian saliency (Optimal Brain Damage) with the empirical Fisher.

    ``H_ww ~ E[g_w^2]`` over batches, saliency ``0.5 * H_ww * w^2`` summed over
    each channel's producer weights (and bias).
    """

    name = "fisher"
    needs_data = True

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        params = producer_modules(model, graph)
        sq = {name: [torch.zeros_like(p) for p in weight_and_bias(mod)] for name, mod in params.items()}
        handles = []
        for name, mod in params.items():
            for i, p in enumerate(weight_and_bias(mod)):
                handles.append(p.register_hook(_sq_hook(sq[name], i)))
        try:
            n = run_batches(model, batches, loss_fn, backward=True)
        finally:
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
        return obd_scores(graph, params, {name: [f / n for f in fs] for name, fs in sq.items()})


def producer_modules(model: nn.Module, graph: DependencyGraph) -> dict[str, nn.Module]:
    """Module name -> module of every producer of the graph's groups (first appearance order)."""
    return {s.name: model.get_submodule(s.name) for g in graph.groups for s in g.producers}


def obd_scores(graph: DependencyGraph, mods: dict[str, nn.Module], curvature: dict[str, list[torch.Tensor]]) -> Scores:
    """OBD saliency ``0.5 * H_ww * w^2`` summed over each channel's producer weights (and bias).

    Args:
        mods: producer name -> module (see :func:`producer_modules`).
        curvature: producer name -> Hessian-diagonal estimate of ``[weight, bias]`` (same shapes).
    """
    out = {}
    for g in graph.groups:
        total = torch.zeros(g.size)
        for s in g.producers:
            mod = mods[s.name]
            for p, f in zip(weight_and_bias(mod), curvature[s.name]):
                sal = 0.5 * f * p.detach() ** 2
                if p.dim() == 1:
                    total += sal[s.offset : s.offset + g.size].float().cpu()
                else:
                    total += _out_slice(mod, s.offset, g.size, sal).sum(1).float().cpu()
        out[g.gid] = total
    return out


def weight_and_bias(mod: nn.Module) -> list[torch.Tensor]:
    """``[weight]`` or ``[weight, bias]`` of a conv / linear layer."""
    return [mod.weight] + ([mod.bias] if getattr(mod, "bias", None) is not None else [])


def _sq_hook(store: list[torch.Tensor], i: int):
    def hook(grad: torch.Tensor) -> None:
        store[i] += grad.detach() ** 2

    return hook


CRITERIA: dict[str, Callable[[], Importance]] = {
    "l1": lambda: Magnitude(1),
    "l2": lambda: Magnitude(2),
    "bn": BNScale,
    "fpgm": FPGM,
    "taylor": Taylor,
    "apoz": APoZ,
    "fisher": Fisher,
    "random": RandomImportance,
}
"""Criterion name -> factory; modules of further criteria add theirs with :func:`register_criterion`."""


def register_criterion(name: str, factory: Callable[[], Importance]) -> None:
    """Make ``factory`` (no arguments -> an :class:`Importance`) selectable by ``name`` everywhere a criterion
    name is taken (:func:`get_criterion`, the prune config and CLI); the package registers ``hessian``
    (:mod:`.hessian`) and ``thinet`` (:mod:`.thinet`) on import."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"criterion name must be a non-empty string, got {name!r}")
    if name in CRITERIA and getattr(CRITERIA[name], "__qualname__", None) != getattr(factory, "__qualname__", None):
        raise ValueError(f"criterion {name!r} is already registered")
    CRITERIA[name] = factory


def get_criterion(name: str | Importance) -> Importance:
    """An :class:`Importance` by name (``l1 l2 bn fpgm taylor apoz fisher random``, ``hessian``, ``thinet``)."""
    if isinstance(name, Importance):
        return name
    if name not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {name!r}")
    return CRITERIA[name]()
