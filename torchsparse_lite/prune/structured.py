"""One call for channel pruning: trace, score, select, shrink."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .graph import DependencyGraph, build_dependency_graph
from .importance import Batches, Importance, LossFn, Scores, get_criterion
from .select import select_channels
from .surgery import PruneResult, mask_groups, prune_groups


@dataclass
class ChannelPlan:
    """What :func:`plan_pruning` decided: the graph, the scores and the channels to remove."""

    graph: DependencyGraph
    scores: Scores
    remove: dict[int, torch.Tensor]

    def kept_channels(self) -> dict[str, list[int]]:
        """Group name -> [channels before, channels after]."""
        return {
            g.name: [g.size, g.size - len(self.remove.get(g.gid, ()))] for g in self.graph.groups
        }

    @property
    def removed_fraction(self) -> float:
        total = self.graph.total_channels
        return sum(len(v) for v in self.remove.values()) / max(total, 1)


def plan_pruning(
    model: nn.Module,
    example_input: object,
    criterion: str | Importance = "l1",
    ratio: float | dict = 0.5,
    *,
    mode: str = "global",
    ignore: Iterable[str] = (),
    batches: Batches | None = None,
    loss_fn: LossFn | None = None,
    graph: DependencyGraph | None = None,
    scores: Scores | None = None,
    **select_kw: object,
) -> ChannelPlan:
    """Trace ``model`` (unless ``graph`` is given), score its channel groups and choose what to remove.

    Args:
        model: network to prune (not modified).
        example_input: small input for the trace.
        criterion: name (``l1 l2 bn fpgm taylor apoz fisher random``) or an :class:`Importance`.
        ratio, mode, select_kw: see :func:`~.select.select_channels`.
        ignore: module names whose output channels stay (e.g. ``["stem.0.conv"]``).
        batches, loss_fn: data for data-driven criteria.
        graph: the model's dependency graph when already traced.
        scores: ``{gid: [group size]}`` already computed on ``graph`` by ``criterion``
            (e.g. for a sensitivity scan); not recomputed.
    """
    if scores is not None and graph is None:
        raise ValueError("scores refer to a dependency graph: pass the graph they were computed on as well")
    graph = graph or build_dependency_graph(model, example_input, ignore)
    if scores is None:
        scores = get_criterion(criterion)(model, graph, batches, loss_fn)
    remove = select_channels(scores, graph, ratio, mode=mode, **select_kw)  # type: ignore[arg-type]
    return ChannelPlan(graph, scores, remove)


def prune_model(
    model: nn.Module, example_input: object, criterion: str | Importance = "l1", ratio: float | dict = 0.5, **kw
) -> tuple[PruneResult, ChannelPlan]:
    """Plan (see :func:`plan_pruning`) and physically remove the channels; ``model`` is not modified."""
    plan = plan_pruning(model, example_input, criterion, ratio, **kw)
    return prune_groups(model, plan.graph, plan.remove), plan


def masked_model(model: nn.Module, plan: ChannelPlan) -> nn.Module:
    """The original architecture with ``plan``'s channels cut off (equals the pruned model's function)."""
    return mask_groups(model, plan.graph, plan.remove)
