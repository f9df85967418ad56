"""Pruning ratios and schedules: sensitivity scan, one-shot / iterative cubic, lottery rewinding.

Callbacks keep this independent of any training code:
``evaluate(model) -> float`` (higher is better, e.g. mIoU), ``finetune(model) -> None``
(trains in place). The latency-driven search is in :mod:`.netadapt`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from .graph import DependencyGraph, build_dependency_graph
from .importance import Batches, Importance, LossFn, Scores, get_criterion
from .select import group_ratio, select_channels
from .surgery import copy_model, mask_groups, prune_groups

Evaluate = Callable[[nn.Module], float]
Finetune = Callable[[nn.Module], None]
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ------------------------------------------------------------------ sensitivity
def sensitivity_analysis(
    model: nn.Module,
    graph: DependencyGraph,
    scores: Scores,
    evaluate: Evaluate,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    progress: bool = True,
) -> dict:
    """Prune each group alone (masked, exact) at every ratio and record the metric.

    Returns:
        ``{"base": metric, "ratios": [...], "curves": {group name: [metric per ratio]}}``.
    """
    base = float(evaluate(model))
    curves: dict[str, list[float]] = {}
    todo = [g for g in graph.groups if g.gid in scores]
    bar = tqdm(total=len(todo) * len(ratios), desc="sensitivity", disable=not progress)
    for g in todo:
        order = torch.argsort(scores[g.gid].double(), stable=True)
        curves[g.name] = []
        for r in ratios:
            n = min(g.size - 1, math.floor(r * g.size + 1e-9))
            masked = mask_groups(model, graph, {g.gid: order[:n]})
            curves[g.name].append(float(evaluate(masked)))
            bar.update(1)
    bar.close()
    return {"base": base, "ratios": list(ratios), "curves": curves}


def ratios_for_drop(sensitivity: dict, max_drop: float) -> dict[str, float]:
    """Per-group ratio: the largest scanned ratio whose metric drop stays <= ``max_drop`` (0 if none)."""
    out = {}
    base = sensitivity["base"]
    for name, curve in sensitivity["curves"].items():
        best = 0.0
        for r, v in zip(sensitivity["ratios"], curve):
            if base - v <= max_drop:
                best = max(best, r)
            else:
                break
        out[name] = best
    return out


def plot_sensitivity(sensitivity: dict, path: str, max_curves: int = 40) -> None:
    """Metric drop vs ratio per group, PNG at ``path``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in list(sensitivity["curves"].items())[:max_curves]:
        ax.plot(sensitivity["ratios"], [sensitivity["base"] - v for v in curve], marker=".", lw=1, label=name)
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel("metric drop")
    ax.set_title("per-layer pruning sensitivity")
    if len(sensitivity["curves"]) <= 16:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ cubic schedule
def cubic_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """Gradual pruning schedule of Zhu & Gupta (2017): ``s_f + (s_i - s_f) (1 - t/n)^3`` for t in 0..n."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    t = min(max(step, 0), total_steps)
    return final + (initial - final) * (1.0 - t / total_steps) ** 3


# ------------------------------------------------------------------ lottery rewinding
def compose_origin(origin: dict[str, dict[str, torch.Tensor]], kept: dict[str, dict[str, torch.Tensor]]) -> dict:
    """Indices into the *original* model after one more pruning step (``kept`` from a PruneResult)."""
    out = dict(origin)
    for name, roles in kept.items():
        prev = origin.get(name, {})
        out[name] = {r: (prev[r][idx] if r in prev else idx) for r, idx in roles.items()}
    return out


def rewind_weights(model: nn.Module, rewind_state: dict[str, torch.Tensor], origin: dict) -> nn.Module:
    """Lottery-ticket rewinding: reset every kept weight to its value in ``rewind_state`` (in place).

    Args:
        model: the pruned model.
        rewind_state: ``state_dict()`` of the *unpruned* model at the rewind point (init or early training).
        origin: per rebuilt module, the original indices it kept (:func:`compose_origin`).
    """
    own = model.state_dict()
    new = {}
    for key, value in own.items():
        mod_name, _, pname = key.rpartition(".")
        src = rewind_state[key]
        roles = origin.get(mod_name)
        if roles and src.dim() > 0 and pname != "num_batches_tracked":
            if "channels" in roles:
                src = src[roles["channels"]]
            elif src.dim() == 3:  # Conv3d [K, Cin, Cout]
                src = src[:, roles["in"]][:, :, roles["out"]]
            elif src.dim() == 2:  # Linear [out, in]
                src = src[roles["out"]][:, roles["in"]]
            else:  # bias
                src = src[roles["out"]]
        if src.shape != value.shape:
            raise ValueError(f"rewind_state[{key!r}] has shape {list(src.shape)}, pruned model {list(value.shape)}")
        new[key] = src.to(value.device, value.dtype)
    model.load_state_dict(new)
    return model


# ------------------------------------------------------------------ iterative
@dataclass
class IterativeResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    origin: dict = field(default_factory=dict)


def iterative_prune(
    model: nn.Module,
    example_input: object,
    final_ratio: float | dict[str, float],
    steps: int,
    *,
    criterion: str | Importance = "l1",
    finetune: Finetune | None = None,
    evaluate: Evaluate | None = None,
    ignore: Iterable[str] = (),
    batches: Batches | None = None,
    loss_fn: LossFn | None = None,
    rewind_state: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
    **select_kw: object,
) -> IterativeResult:
    """Prune -> fine-tune -> prune ... following :func:`cubic_sparsity` up to ``final_ratio`` of the channels.

    ``steps=1`` is one-shot pruning. With a float ``final_ratio`` the global
    selection at step ``t`` removes enough channels that
    ``cubic_sparsity(t, steps, final_ratio)`` of the original prunable channels
    are gone. With a dict ``{group name: ratio}`` (``"default"`` for the
    groups it does not name, else 0; e.g. :func:`ratios_for_drop`) every group
    follows its own cubic schedule up to its ratio of its original channels
    (local selection). With ``rewind_state`` (a state dict of the unpruned
    model) the kept weights are rewound after every step before fine-tuning
    (lottery-ticket rewinding). The input ``model`` is not modified.
    """
    _check_final_ratio(final_ratio)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ignore = tuple(ignore)
    crit = get_criterion(criterion)
    model = copy_model(model)
    graph0 = build_dependency_graph(model, example_input, ignore)
    total0 = graph0.total_channels
    sizes0 = {g.name: g.size for g in graph0.groups}
    origin: dict = {}
    history = []
    for t in tqdm(range(1, steps + 1), desc="iterative prune", disable=not progress):
        graph = build_dependency_graph(model, example_input, ignore)
        if isinstance(final_ratio, dict):
            wanted: int | dict = _group_targets(graph, sizes0, final_ratio, t, steps)
        else:
            wanted = max(0, round(cubic_sparsity(t, steps, final_ratio) * total0) - (total0 - graph.total_channels))
        if wanted:
            scores = crit(model, graph, batches, loss_fn)
            res = prune_groups(model, graph, _step_selection(scores, graph, wanted, select_kw))
            model = res.model
            origin = compose_origin(origin, res.kept)
            if rewind_state is not None:
                rewind_weights(model, rewind_state, origin)
        if finetune is not None:
            finetune(model)
        entry = {"step": t, "target": _target(graph0, final_ratio, t, steps)}
        entry["removed"] = 1.0 - build_dependency_graph(model, example_input, ignore).total_channels / total0
        if evaluate is not None:
            entry["metric"] = float(evaluate(model))
        history.append(entry)
    return IterativeResult(model, history, origin)


def _check_final_ratio(final_ratio: float | dict[str, float]) -> None:
    values = final_ratio.values() if isinstance(final_ratio, dict) else [final_ratio]
    for r in values:
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 <= r < 1.0:
            raise ValueError(f"final_ratio must be in [0, 1) (per group when a dict), got {final_ratio!r}")


def _group_targets(graph: DependencyGraph, sizes0: dict[str, int], final: dict[str, float], t: int, steps: int) -> dict:
    """``{group name: fraction of its current channels to remove at step t}`` for the groups behind schedule.

    A group of ``s0`` original channels and final ratio ``r`` should have lost
    ``round(cubic_sparsity(t, steps, r) * s0)`` of them by step ``t``.
    """
    out = {}
    for g in graph.groups:
        s0 = sizes0.get(g.name, g.size)
        want = round(cubic_sparsity(t, steps, group_ratio(graph, g.gid, final)) * s0) - (s0 - g.size)
        if want > 0:
            out[g.name] = min(want / g.size, 0.99)
    return out


def _step_selection(scores: Scores, graph: DependencyGraph, wanted: int | dict, select_kw: dict) -> dict:
    """Channels removed in one step: ``wanted`` channels ranked globally, or per-group fractions (local)."""
    if isinstance(wanted, dict):
        local_kw = {k: v for k, v in select_kw.items() if k in ("round_to", "min_keep")}
        return select_channels(scores, graph, {**wanted, "default": 0.0}, mode="local", **local_kw)
    scored = sum(graph.group(gid).size for gid in scores)
    return select_channels(scores, graph, min(wanted / max(scored, 1), 0.99), mode="global", **select_kw)


def _target(graph0: DependencyGraph, final_ratio: float | dict[str, float], t: int, steps: int) -> float:
    """The schedule's removed fraction of all original prunable channels at step ``t``."""
    if not isinstance(final_ratio, dict):
        return cubic_sparsity(t, steps, final_ratio)
    removed = sum(cubic_sparsity(t, steps, group_ratio(graph0, g.gid, final_ratio)) * g.size for g in graph0.groups)
    return removed / max(graph0.total_channels, 1)
