"""Latency-driven channel search in the spirit of NetAdapt (Yang et al. 2018).

Each iteration proposes, for every channel group, removing a slice of its
lowest-importance channels, *measures* the proposal's latency and metric, and
keeps the proposal that cuts the most latency per unit of lost metric; it stops
at the latency target (or when nothing is left to cut).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from .graph import build_dependency_graph
from .importance import Importance, get_criterion
from .surgery import prune_groups

Latency = Callable[[nn.Module], float]


def netadapt_search(
    model: nn.Module,
    example_input: object,
    latency: Latency,
    evaluate: Callable[[nn.Module], float],
    target_ratio: float = 0.6,
    *,
    step_fraction: float = 0.25,
    criterion: str | Importance = "l1",
    ignore: Iterable[str] = (),
    max_iters: int = 20,
    finetune: Callable[[nn.Module], None] | None = None,
    eps: float = 1e-3,
    progress: bool = True,
) -> tuple[nn.Module, list[dict]]:
    """Shrink ``model`` until ``latency(model) <= target_ratio * latency(original)``.

    Args:
        latency: measured cost of a model (e.g. median ms on a fixed scan).
        evaluate: metric, higher is better.
        step_fraction: fraction of a group's channels one proposal removes (at least one).
        eps: metric-loss floor in the latency-per-loss ratio (proposals losing
            nothing are ranked by latency cut alone).
        finetune: optional short fine-tune after each accepted step (in place).

    Returns:
        (the pruned model, one record per accepted step).
    """
    if not 0.0 < target_ratio < 1.0:
        raise ValueError(f"target_ratio must be in (0, 1), got {target_ratio!r}")
    if not 0.0 < step_fraction < 1.0:
        raise ValueError(f"step_fraction must be in (0, 1), got {step_fraction!r}")
    crit = get_criterion(criterion)
    ignore = tuple(ignore)
    lat0 = latency(model)
    cur_lat, cur_metric = lat0, evaluate(model)
    history = [{"iter": 0, "latency": lat0, "metric": cur_metric, "group": None, "removed": 0}]
    for it in range(1, max_iters + 1):
        if cur_lat <= target_ratio * lat0:
            break
        graph = build_dependency_graph(model, example_input, ignore)
        scores = crit(model, graph)
        best = None
        for g in tqdm(graph.groups, desc=f"netadapt {it}", disable=not progress, leave=False):
            if g.gid not in scores or g.size < 2:
                continue
            n = min(g.size - 1, max(1, math.floor(step_fraction * g.size)))
            cand = prune_groups(model, graph, {g.gid: torch.argsort(scores[g.gid].double(), stable=True)[:n]}).model
            lat, met = latency(cand), evaluate(cand)
            gain = (cur_lat - lat) / max(cur_metric - met, eps)
            if cur_lat - lat > 0 and (best is None or gain > best[0]):
                best = (gain, cand, lat, met, g.name, n)
        if best is None:
            break
        _, model, cur_lat, cur_metric, name, n = best
        if finetune is not None:
            finetune(model)
            cur_metric = evaluate(model)
        history.append({"iter": it, "latency": cur_lat, "metric": cur_metric, "group": name, "removed": n})
    return model, history
