"""AutoSlim (Yu & Huang 2019, "AutoSlim: Towards One-Shot Architecture Search for Channel Numbers").

One slimmable supernet with shared weights stands for every width configuration: a channel group's width is
a prefix of its channels. With ``sort_channels`` (default) every group is first reordered by the criterion's
scores, highest first (once; the function is unchanged), so prefixes keep the important channels; otherwise
the native order is used. A width is applied by prefix masks on the consumers' inputs (the pre-hooks of
:func:`~.l0.attach_gates`), which is exactly what slicing the channels away does (:func:`~.surgery.mask_groups`):
the sliced network equals the masked supernet.

Training follows the sandwich rule (Yu & Huang, ICCV 2019): each step accumulates the gradients of the largest
width, the smallest (every group at ``min_width``) and ``n_random`` random ones (each group drawn from its own
grid, so the non-uniform widths greedy slimming visits are trained), then takes one optimizer step; with
``distill`` the narrower widths learn the largest one's detached predictions (in-place distillation). Greedy
slimming starts at full width and, until the MAC (or measured latency) budget is met, evaluates shrinking each
group by one step (``step_fraction`` of its channels) on held-out data and takes the best-scoring step; the
chosen widths are then sliced out of the supernet weights (:func:`~.surgery.prune_groups`).

Batch norm: the shared running statistics mix every trained width, so each candidate (on the masked supernet,
:func:`masked_score`) and the final network get theirs recomputed on training batches (exact averages, train
mode, no gradients): the post-training statistics of universally slimmable networks instead of private BNs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .cost import BUDGET_KINDS, ChannelCost, Kept
from .graph import DependencyGraph, build_dependency_graph
from .importance import Importance, LossFn, get_criterion
from .l0 import attach_gates
from .regression import feats_of, forward_args
from .surgery import apply_selection, copy_model, prune_groups

Batch = tuple[object, object]


class WidthSpace:
    """The widths each group may take: ``size, size - step, ...`` down to ``ceil(min_width * size)``."""

    def __init__(self, graph: DependencyGraph, step_fraction: float = 0.1, min_width: float = 0.2) -> None:
        self.graph = graph
        self.sizes = {g.gid: g.size for g in graph.groups}
        self.step = {g.gid: max(1, round(step_fraction * g.size)) for g in graph.groups}
        self.n_min = {g.gid: max(1, math.ceil(min_width * g.size - 1e-9)) for g in graph.groups}

    def full(self) -> Kept:
        return dict(self.sizes)

    def smallest(self) -> Kept:
        return dict(self.n_min)

    def shrink(self, widths: Kept, gid: int) -> Kept:
        """``widths`` with group ``gid`` one step narrower (not below its minimum)."""
        return {**widths, gid: max(self.n_min[gid], widths[gid] - self.step[gid])}

    def grid(self, gid: int) -> list[int]:
        """Every width of group ``gid`` greedy slimming can reach, widest first."""
        out, w = [self.sizes[gid]], self.sizes[gid]
        while w > self.n_min[gid]:
            w = max(self.n_min[gid], w - self.step[gid])
            out.append(w)
        return out

    def random(self, generator: torch.Generator) -> Kept:
        """Each group's width drawn uniformly from its :meth:`grid`."""
        out = {}
        for gid in self.sizes:
            grid = self.grid(gid)
            out[gid] = grid[int(torch.randint(len(grid), (), generator=generator))]
        return out

    def sandwich(self, n_random: int, generator: torch.Generator) -> list[Kept]:
        """The widths of one sandwich step: largest, smallest, then ``n_random`` random ones."""
        return [self.full(), self.smallest(), *(self.random(generator) for _ in range(n_random))]

    def remove(self, widths: Kept) -> dict[int, torch.Tensor]:
        """``{gid: indices}`` of the channels past each group's prefix."""
        return {gid: torch.arange(w, self.sizes[gid]) for gid, w in widths.items() if w < self.sizes[gid]}


class PrefixMasks:
    """``current[gid]``: ``[size]`` mask (1 on the first ``w`` channels) that the consumers' pre-hooks apply."""

    def __init__(self, space: WidthSpace, device: torch.device | str = "cpu") -> None:
        self.space, self.device = space, device
        self.current: dict[int, torch.Tensor] = {}
        self.set(space.full())

    def set(self, widths: Kept) -> None:
        self.current = {gid: (torch.arange(n, device=self.device) < widths[gid]).float()
                        for gid, n in self.space.sizes.items()}  # fmt: skip


def sort_by_importance(
    model: nn.Module, graph: DependencyGraph, x: object, criterion: str | Importance = "l1",
    batches: Sequence[Batch] | None = None, loss_fn: LossFn | None = None, ignore: Iterable[str] = (),
) -> tuple[nn.Module, DependencyGraph]:  # fmt: skip
    """A copy of ``model`` with every scored group's channels reordered by score, highest first (same function).

    Returns:
        (the reordered model, its dependency graph).
    """
    scores = get_criterion(criterion)(model, graph, batches, loss_fn)
    order = {gid: torch.argsort(s.double(), descending=True, stable=True) for gid, s in scores.items()}
    model = apply_selection(model, graph, order).model
    return model, build_dependency_graph(model, x, tuple(ignore))


def slice_widths(model: nn.Module, space: WidthSpace, widths: Kept) -> nn.Module:
    """The supernet at ``widths`` as an ordinary, smaller network (a copy; the prefixes are kept)."""
    return prune_groups(model, space.graph, space.remove(widths)).model


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[Batch]) -> nn.Module:
    """Recompute every batch norm's running statistics as exact averages over ``batches`` (in place)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return model
    saved, was = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    for inputs, _ in batches:
        model(*forward_args(inputs))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    return model.train(was)


def masked_score(supernet: nn.Module, space: WidthSpace, widths: Kept, batches: Sequence[Batch],
                 evaluate: Callable[[nn.Module], float]) -> float:  # fmt: skip
    """``evaluate`` of the supernet at ``widths`` (prefix masks on, BN statistics recomputed on ``batches``).

    Equal to evaluating the recalibrated :func:`slice_widths` network, without copying; the supernet's
    statistics are restored afterwards.
    """
    keys = ("running_mean", "running_var", "num_batches_tracked")
    saved = {k: v.clone() for k, v in supernet.state_dict().items() if k.endswith(keys)}
    masks = PrefixMasks(space, next(supernet.parameters()).device)
    masks.set(widths)
    handles = attach_gates(supernet, space.graph, masks)  # type: ignore[arg-type] - any holder of ``current`` will do
    try:
        return float(evaluate(recalibrate_bn(supernet, batches)))
    finally:
        for h in handles:
            h.remove()
        supernet.load_state_dict(saved, strict=False)


def sandwich_step(model: nn.Module, masks: PrefixMasks, widths: list[Kept], batch: Batch, loss_fn: LossFn,
                  distill: bool = True) -> list[float]:  # fmt: skip
    """Accumulate the gradients of every width in ``widths`` (the first is the teacher); one loss per width."""
    inputs, target = batch
    losses, teacher = [], None
    for i, w in enumerate(widths):
        masks.set(w)
        out = feats_of(model(*forward_args(inputs)))
        if i == 0 or not distill:
            loss = loss_fn(out, target)
        else:
            loss = -(F.softmax(teacher, 1) * F.log_softmax(out, 1)).sum(1).mean()
        loss.backward()
        teacher = out.detach() if i == 0 else teacher
        losses.append(float(loss.detach()))
    masks.set(masks.space.full())
    return losses


def train_supernet(
    model: nn.Module, space: WidthSpace, batches: Sequence[Batch], loss_fn: LossFn, steps: int, *,
    n_random: int = 2, lr: float = 0.005, distill: bool = True, seed: int = 0, progress: bool = True,
) -> list[dict]:  # fmt: skip
    """``steps`` sandwich steps (Adam, cosine schedule) of ``model`` in place; ``{"step", "losses"}`` per step."""
    masks = PrefixMasks(space, next(model.parameters()).device)
    handles = attach_gates(model, space.graph, masks)  # type: ignore[arg-type] - any holder of ``current`` will do
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    gen, history = torch.Generator().manual_seed(seed), []
    model.train()
    try:
        for step, batch in zip(tqdm(range(steps), desc="supernet", disable=not progress), itertools.cycle(batches)):
            opt.zero_grad(set_to_none=True)
            history.append({"step": step, "losses": sandwich_step(model, masks, space.sandwich(n_random, gen),
                                                                  batch, loss_fn, distill)})  # fmt: skip
            opt.step()
            sched.step()
    finally:
        for h in handles:
            h.remove()
        model.eval()
    return history


def greedy_slim(space: WidthSpace, score: Callable[[Kept], float], cost: Callable[[Kept], float], limit: float,
                progress: bool = True) -> tuple[Kept, list[dict]]:  # fmt: skip
    """From full width, shrink the group whose one-step shrink scores best until ``cost(widths) <= limit``.

    Returns:
        (the widths, one record per accepted step: ``group``, ``width``, ``metric``, ``cost``, ``candidates``).
    """
    widths, history = space.full(), []
    current = cost(widths)
    bar = tqdm(desc="greedy slimming", disable=not progress, leave=False)
    while current > limit:
        cands = {gid: space.shrink(widths, gid) for gid in widths if widths[gid] > space.n_min[gid]}
        if not cands:
            break
        scored = {gid: score(w) for gid, w in cands.items()}
        gid = max(scored, key=lambda g: scored[g])
        widths, current = cands[gid], cost(cands[gid])
        history.append({"group": gid, "width": widths[gid], "metric": scored[gid], "cost": current,
                        "candidates": len(cands)})  # fmt: skip
        bar.update()
    bar.close()
    return widths, history


def _budget(supernet: nn.Module, space: WidthSpace, x: object, budget: float, kind: str,
            latency: Callable[[nn.Module], float] | None) -> tuple[Callable[[Kept], float], float, float]:  # fmt: skip
    """``(cost of widths, limit, cost at full width)`` for a MAC or a latency budget."""
    if kind == "macs":
        macs = ChannelCost(supernet, space.graph, x)
        return macs.total, budget * macs.base, float(macs.base)
    if latency is None:
        raise ValueError("budget_kind 'latency' needs a latency function (model -> ms)")
    base = latency(supernet)
    return (lambda w: latency(slice_widths(supernet, space, w))), budget * base, base


def autoslim_search(
    model: nn.Module,
    example_input: object,
    train_batches: Sequence[Batch],
    loss_fn: LossFn,
    evaluate: Callable[[nn.Module], float],
    budget: float = 0.5,
    *,
    budget_kind: str = "macs",
    latency: Callable[[nn.Module], float] | None = None,
    steps: int = 100,
    n_random: int = 2,
    step_fraction: float = 0.1,
    min_width: float = 0.2,
    lr: float = 0.005,
    distill: bool = True,
    sort_channels: bool = True,
    criterion: str | Importance = "l1",
    importance_batches: Sequence[Batch] | None = None,
    ignore: Iterable[str] = (),
    bn_batches: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Train a slimmable supernet from ``model``, then slim it greedily to the budget (see the module doc).

    Args:
        model: the network (not modified; a copy becomes the supernet).
        example_input: input traced for the graph and the MAC count (SparseTensor).
        train_batches: ``(input, target)`` batches of the supernet training and the BN statistics.
        loss_fn: ``loss_fn(output [N, C], target)`` of the task.
        evaluate: held-out metric of a model, higher is better (greedy slimming maximises it).
        budget: fraction in (0, 1) of the full width's MACs (``budget_kind="macs"``) or of ``latency(model)``.
        steps / n_random / lr / distill: supernet training (``steps = 0``: slim the given weights).
        step_fraction / min_width: one greedy step and the narrowest width, as fractions of a group.
        sort_channels / criterion / importance_batches: reorder each group by importance first.
        bn_batches: training batches of every BN recalibration; seed: random widths and initial RNG.

    Returns:
        (the slimmed network with recalibrated BN, a record: ``budget``, ``budget_kind``, ``base_cost``,
        ``final_cost``, ``feasible``, ``widths`` (group name -> [channels, width]), ``greedy`` (per step the
        group, its width, metric and cost) and ``supernet`` (losses of every 20th sandwich step)).
    """
    if budget_kind not in BUDGET_KINDS:
        raise ValueError(f"budget_kind must be one of {list(BUDGET_KINDS)}, got {budget_kind!r}")
    for name, value in (("budget", budget), ("step_fraction", step_fraction), ("min_width", min_width)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if steps < 0 or n_random < 0:
        raise ValueError(f"need steps >= 0 and n_random >= 0, got {steps!r} and {n_random!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        supernet = copy_model(model)
        graph = build_dependency_graph(supernet, example_input, tuple(ignore))
        if sort_channels:
            supernet, graph = sort_by_importance(supernet, graph, example_input, criterion, importance_batches,
                                                 loss_fn, ignore)  # fmt: skip
        space = WidthSpace(graph, step_fraction, min_width)
        trained = train_supernet(supernet, space, train_batches, loss_fn, steps, n_random=n_random, lr=lr,
                                 distill=distill, seed=seed, progress=progress)  # fmt: skip
        calib = list(train_batches)[:bn_batches]
        cost, limit, base = _budget(supernet, space, example_input, budget, budget_kind, latency)
        score = lambda w: masked_score(supernet, space, w, calib, evaluate)  # noqa: E731
        widths, greedy = greedy_slim(space, score, cost, limit, progress)
        final = greedy[-1]["cost"] if greedy else cost(widths)
        slim = recalibrate_bn(slice_widths(supernet, space, widths), calib)
    names = {g.gid: g.name for g in graph.groups}
    record = {"budget": budget, "budget_kind": budget_kind, "base_cost": base, "final_cost": final,
              "feasible": final <= limit, "widths": {names[gid]: [space.sizes[gid], w] for gid, w in widths.items()},
              "greedy": [{**r, "group": names[r["group"]]} for r in greedy],
              "supernet": trained[:: max(1, len(trained) // 20)]}  # fmt: skip
    return slim, record
