"""AMC: AutoML for Model Compression (He, Lin, Liu, Wang, Li & Han, ECCV 2018), on channel groups.

A DDPG agent (:mod:`.ddpg`) walks the prunable channel groups of the dependency graph in forward order and
picks, for each, the fraction of its channels to keep, in ``[min_keep, 1]``. The state of group ``t`` is the
paper's layer embedding adapted to groups of sparse convs: ``(t, channels, input channels of its producers,
kernel taps, stride, MACs of the layers reading or writing it)``, each min-max normalised over the groups,
then ``(MACs reduced so far, MACs of the layers after t, previous action)`` as fractions of the unpruned MACs.
Which channels of a group go is the criterion's choice (default ``l1``, scored once on the unpruned model).

The budget is enforced as in the paper: each action is clipped to the largest keep that still lets the
remaining groups meet the budget at ``min_keep``, so every episode is feasible (exact, on integer channel
counts, with :class:`~.cost.ChannelCost`). A latency budget (a fraction of the CPU time of one scan with its
maps, as NetAdapt's ``netadapt_target``) becomes a MAC budget by the line through the measured latencies of
the unpruned and of the all-``min_keep`` model; each episode's model is then measured, and the best episode
is chosen among those that meet the latency budget (measurements are noisy: reproducibility by seed holds
for MAC budgets). The reward is the paper's ``R_err``: the held-out metric of the pruned model without
fine-tuning (or after a short fine-tune), times ``reward_scale``; all transitions of an episode share it, and
the critic's targets subtract the moving-average baseline. The first ``warmup`` episodes act uniformly at
random; then the actor explores with truncated-normal noise ``sigma0 * decay ** (episode - warmup)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from .. import nn as tsnn
from .cost import BUDGET_KINDS, ChannelCost, Kept, layer_widths
from .ddpg import DDPG
from .graph import ChannelGroup, DependencyGraph, build_dependency_graph
from .importance import Batches, Importance, LossFn, Scores, get_criterion
from .surgery import prune_groups

STATE_DIM = 9


def _static_features(model: nn.Module, groups: list[ChannelGroup], cost: ChannelCost) -> torch.Tensor:
    """``[T, 6]`` (index, channels, producer input channels, taps, stride, MACs) min-max normalised per column."""
    rows = []
    for t, g in enumerate(groups):
        mods = [model.get_submodule(p.name) for p in g.producers]
        convs = [m for m in mods if isinstance(m, tsnn.Conv3d)]
        rows.append([t, g.size, max((layer_widths(m)[0] for m in mods), default=0),
                     max((m.kernel_volume for m in convs), default=1),
                     max((math.prod(m.stride) for m in convs), default=1), cost.group_macs(g.gid)])  # fmt: skip
    f = torch.tensor(rows, dtype=torch.float64)
    lo, span = f.min(0).values, f.max(0).values - f.min(0).values
    return torch.where(span > 0, (f - lo) / span.clamp_min(1e-12), torch.zeros_like(f)).float()


class AmcEnv:
    """The walk over ``groups``: states, the budget clip and the channels to remove.

    Args:
        cost: MACs of the model as a function of the kept channels.
        groups: the groups the agent decides, in forward order.
        scores: criterion scores ``{gid: [size]}`` (higher = keep).
        min_keep: smallest keep fraction of a group.
        mac_budget: MACs the pruned model may have.
    """

    def __init__(self, model: nn.Module, cost: ChannelCost, groups: list[ChannelGroup], scores: Scores,
                 min_keep: float, mac_budget: float) -> None:  # fmt: skip
        self.cost, self.groups, self.scores, self.min_keep, self.budget = cost, groups, scores, min_keep, mac_budget
        self.n_min = [max(1, math.ceil(min_keep * g.size - 1e-9)) for g in groups]
        self.features = _static_features(model, groups, cost)
        index = {g.gid: t for t, g in enumerate(groups)}
        self.last = [max((index[g] for g in c.ins + c.outs if g in index), default=-1) for c in cost.layers]
        floor = self.total_at(0, {})
        if floor > mac_budget:
            raise ValueError(f"MAC budget {mac_budget:.0f} is below the {floor} MACs left at min_keep={min_keep}")

    def floor(self, t: int, kept: Kept) -> Kept:
        """``kept`` with every group from ``t`` on at its minimum."""
        return {**kept, **{g.gid: n for g, n in zip(self.groups[t:], self.n_min[t:])}}

    def total_at(self, t: int, kept: Kept) -> int:
        """MACs with ``kept`` (groups ``< t`` decided) and the groups from ``t`` on at their minimum."""
        return self.cost.total(self.floor(t, kept))

    def state(self, t: int, kept: Kept, prev: float) -> torch.Tensor:
        """``[STATE_DIM]`` embedding of group ``t`` with groups ``< t`` at ``kept`` and the rest unpruned."""
        layers, base = self.cost.layer_macs(kept), max(self.cost.base, 1)
        rest = sum(m for m, last in zip(layers, self.last) if last > t)
        dyn = torch.tensor([(self.cost.base - sum(layers)) / base, rest / base, prev])
        return torch.cat([self.features[t], dyn.float()])

    def clip(self, t: int, kept: Kept, n: int) -> int:
        """The largest count in ``[n_min, n]`` for group ``t`` that keeps the budget reachable (binary search)."""
        gid, lo, hi = self.groups[t].gid, self.n_min[t], max(min(n, self.groups[t].size), self.n_min[t])
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.total_at(t + 1, {**kept, gid: mid}) <= self.budget:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def remove(self, kept: Kept) -> dict[int, torch.Tensor]:
        """``{gid: indices}`` of the lowest-scored channels beyond each group's kept count."""
        return {g.gid: torch.argsort(self.scores[g.gid].double(), stable=True)[: g.size - kept[g.gid]]
                for g in self.groups if kept.get(g.gid, g.size) < g.size}  # fmt: skip

    def walk(self, policy: Callable[[torch.Tensor], float]) -> tuple[Kept, list[torch.Tensor], list[float]]:
        """One episode: ``policy(state) -> action in [0, 1]`` per group, clipped to the budget.

        Returns:
            (kept counts, the states ``[STATE_DIM]``, the executed actions in [0, 1]).
        """
        kept: Kept = {}
        states, actions, prev = [], [], 1.0
        for t, g in enumerate(self.groups):
            s = self.state(t, kept, prev)
            keep = self.min_keep + (1 - self.min_keep) * policy(s)
            kept[g.gid] = self.clip(t, kept, round(keep * g.size))
            prev = kept[g.gid] / g.size
            states.append(s)
            actions.append(min(max((prev - self.min_keep) / (1 - self.min_keep), 0.0), 1.0))
        return kept, states, actions


def _mac_budget(
    model: nn.Module, graph: DependencyGraph, probe: AmcEnv, budget: float, kind: str, latency: Callable | None
) -> tuple[float, dict]:
    """The MAC budget (for a latency budget: by the two-point line) and what was measured for it.

    Args:
        probe: the walk without a budget (for its costs and its all-minimum model).
    """
    base = probe.cost.base
    if kind == "macs":
        return budget * base, {}
    if latency is None:
        raise ValueError("budget_kind 'latency' needs a latency function (model -> ms)")
    floor = probe.floor(0, {})
    lat0, lat_min = latency(model), latency(prune_groups(model, graph, probe.remove(floor)).model)
    if budget * lat0 <= lat_min:
        raise ValueError(f"latency budget {budget * lat0:.2f} ms is below the {lat_min:.2f} ms at "
                         f"min_keep={probe.min_keep}")  # fmt: skip
    m_min = probe.cost.total(floor)
    frac = (budget * lat0 - lat_min) / (lat0 - lat_min)
    return m_min + frac * (base - m_min), {"base_latency": lat0, "min_latency": lat_min}


def amc_search(
    model: nn.Module,
    example_input: object,
    evaluate: Callable[[nn.Module], float],
    budget: float = 0.5,
    *,
    budget_kind: str = "macs",
    latency: Callable[[nn.Module], float] | None = None,
    episodes: int = 30,
    warmup: int = 10,
    min_keep: float = 0.2,
    seed: int = 0,
    criterion: str | Importance = "l1",
    batches: Batches | None = None,
    loss_fn: LossFn | None = None,
    ignore: Iterable[str] = (),
    finetune: Callable[[nn.Module], None] | None = None,
    sigma0: float = 0.5,
    decay: float = 0.95,
    reward_scale: float = 0.01,
    agent_kw: dict | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Search per-group keep ratios with AMC's DDPG agent under a MAC or latency budget (see the module doc).

    Args:
        model: the network (not modified).
        example_input: input traced for the graph and the MAC count (SparseTensor).
        evaluate: held-out metric of a model, higher is better (the reward is ``reward_scale * metric``).
        budget: fraction in (0, 1) of the unpruned MACs (``budget_kind="macs"``) or of ``latency(model)``.
        latency: measured cost of a model (e.g. :func:`~.cost.cpu_latency`), needed for ``"latency"``.
        episodes / warmup: episodes in all / acting uniformly at random first (warmup >= episodes: random search).
        min_keep: smallest keep fraction of a group; seed: the agent's networks and noise.
        criterion, batches, loss_fn: which channels of a group go (scored once on ``model``).
        finetune: optional short fine-tune (in place) of each episode's model before it is evaluated.
        sigma0 / decay: exploration noise after the warm-up; agent_kw: :class:`~.ddpg.DDPG` options.

    Returns:
        (the best episode's pruned model, not fine-tuned; a record with ``budget``, ``budget_kind``,
        ``base_macs``, ``mac_budget``, ``best_episode`` and ``history``: per episode ``reward``, ``metric``,
        ``keep`` (group name -> kept fraction), ``macs``, ``macs_ratio``, ``latency`` for latency budgets,
        ``sigma`` and the mean ``critic_loss`` of its updates).
    """
    if budget_kind not in BUDGET_KINDS:
        raise ValueError(f"budget_kind must be one of {list(BUDGET_KINDS)}, got {budget_kind!r}")
    for name, value in (("budget", budget), ("min_keep", min_keep)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if episodes < 1 or warmup < 0:
        raise ValueError(f"need episodes >= 1 and warmup >= 0, got {episodes!r} and {warmup!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        graph = build_dependency_graph(model, example_input, tuple(ignore))
        scores = get_criterion(criterion)(model, graph, batches, loss_fn)
        groups = [g for g in graph.groups if g.gid in scores and g.size > 1]
        if not groups:
            raise ValueError("amc_search: the model has no prunable channel group")
        cost = ChannelCost(model, graph, example_input)
        probe = AmcEnv(model, cost, groups, scores, min_keep, float("inf"))
        mac_budget, measured = _mac_budget(model, graph, probe, budget, budget_kind, latency)
        env = AmcEnv(model, cost, groups, scores, min_keep, mac_budget)
        agent = DDPG(STATE_DIM, seed=seed, **(agent_kw or {}))
        run = _Episodes(env, agent, graph, model, evaluate, finetune, reward_scale)
        if budget_kind == "latency":  # each episode's model is measured; the best is chosen among those in budget
            run.latency, run.limit = latency, budget * measured["base_latency"]
        for ep in tqdm(range(episodes), desc="amc", disable=not progress, leave=False):
            run.episode(ep, sigma0 * decay ** (ep - warmup) if ep >= warmup else None)
    best = run.best_episode()
    record = {"budget": budget, "budget_kind": budget_kind, "base_macs": cost.base, "mac_budget": mac_budget,
              **measured, "best_episode": best, "history": run.history}  # fmt: skip
    return prune_groups(model, graph, env.remove(run.kept[best])).model, record


class _Episodes:
    """The episodes of one search: walk, reward, replay and updates; every episode's record and counts."""

    def __init__(self, env: AmcEnv, agent: DDPG, graph: DependencyGraph, model: nn.Module, evaluate: Callable,
                 finetune: Callable | None, reward_scale: float) -> None:  # fmt: skip
        self.env, self.agent, self.graph, self.model = env, agent, graph, model
        self.evaluate, self.finetune, self.scale = evaluate, finetune, reward_scale
        self.latency: Callable | None = None
        self.limit = float("inf")
        self.history: list[dict] = []
        self.kept: list[Kept] = []

    def episode(self, ep: int, sigma: float | None) -> None:
        """Walk (uniform actions while ``sigma`` is None), score, store the transitions, update after warm-up."""
        env, agent = self.env, self.agent
        kept, states, actions = env.walk(lambda s: agent.random_action() if sigma is None else agent.explore(s, sigma))
        pruned = prune_groups(self.model, self.graph, env.remove(kept)).model
        if self.finetune is not None:
            self.finetune(pruned)
        metric = float(self.evaluate(pruned))
        reward = self.scale * metric
        agent.update_baseline(reward)
        losses = []
        for t, (s, a) in enumerate(zip(states, actions)):
            last = t == len(states) - 1
            agent.observe((s, a, reward, s if last else states[t + 1], last))
            if sigma is not None:
                losses.append(agent.update()["critic_loss"])
        macs = env.cost.total(kept)
        rec = {"episode": ep, "reward": reward, "metric": metric, "macs": macs, "macs_ratio": macs / env.cost.base,
               "keep": {g.name: kept[g.gid] / g.size for g in env.groups}, "sigma": sigma,
               "critic_loss": sum(losses) / len(losses) if losses else None}  # fmt: skip
        if self.latency is not None:
            rec["latency"] = self.latency(pruned)
        self.history.append(rec)
        self.kept.append(kept)

    def best_episode(self) -> int:
        """Highest reward among the episodes within the budget (latency: the fastest when none is)."""
        ok = [i for i, r in enumerate(self.history) if r.get("latency", 0.0) <= self.limit]
        if not ok:
            return min(range(len(self.history)), key=lambda i: self.history[i]["latency"])
        return max(ok, key=lambda i: self.history[i]["reward"])
