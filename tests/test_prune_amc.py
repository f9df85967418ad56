"""AMC: the exact MAC model, the budget clip, the DDPG agent, seeded search, latency budgets, NetAdapt, config, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from test_prune_thinet import run_prune_cli
from toy_models import TinyUNet, random_input

from torchsparse_lite.__main__ import main
from torchsparse_lite.detection.backbone import SparseBackbone8x
from torchsparse_lite.models import MinkUNet, SparseResNetClassifier
from torchsparse_lite.models.stats import count_macs
from torchsparse_lite.prune import (
    DDPG,
    AmcEnv,
    ChannelCost,
    amc_search,
    build_dependency_graph,
    channel_shapes,
    get_criterion,
    netadapt_search,
    prune_groups,
)
from torchsparse_lite.prune.amc import STATE_DIM
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.ddpg import truncated_normal
from torchsparse_lite.train.checkpoint import load_model

SMALL_AGENT = {"hidden": 32, "batch_size": 16}


def _fidelity(model: torch.nn.Module, xs: list) -> callable:
    """Metric: minus 100x the mean squared deviation from ``model``'s outputs on ``xs`` (higher is better)."""
    with torch.no_grad():
        ref = [model(x) for x in xs]

    def evaluate(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return -100 * float(sum((m(x) - r).pow(2).mean() for x, r in zip(xs, ref)) / len(xs))

    return evaluate


@pytest.fixture(scope="module")
def unet() -> tuple:
    torch.manual_seed(0)
    return TinyUNet(width=8).eval(), random_input(300, 16)


@pytest.mark.parametrize("net", ["unet", "minkunet", "resnet", "backbone"])
def test_channel_cost_equals_the_counted_macs_of_pruned_models(net: str) -> None:
    torch.manual_seed(0)
    model = {"unet": lambda: TinyUNet(width=8), "minkunet": lambda: MinkUNet(4, 5, cr=0.25),
             "resnet": lambda: SparseResNetClassifier(4, 3, depth=21, cr=0.25),
             "backbone": lambda: SparseBackbone8x(4, widths=(8, 8, 16, 16), out_channels=16)}[net]().eval()  # fmt: skip
    x = random_input(500, 20, batch=2)
    graph = build_dependency_graph(model, x)
    cost = ChannelCost(model, graph, x)
    assert cost.base == count_macs(model, x)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        kept = {g.gid: int(torch.randint(1, g.size + 1, (), generator=gen)) for g in graph.groups}
        pruned = prune_groups(model, graph, {g.gid: torch.arange(kept[g.gid], g.size) for g in graph.groups}).model
        assert cost.total(kept) == count_macs(pruned, x) < cost.base


def _env(model: torch.nn.Module, x: object, fraction: float, min_keep: float = 0.25) -> AmcEnv:
    graph = build_dependency_graph(model, x)
    scores = get_criterion("l1")(model, graph)
    cost = ChannelCost(model, graph, x)
    return AmcEnv(model, cost, [g for g in graph.groups if g.size > 1], scores, min_keep, fraction * cost.base)


def test_the_clip_keeps_every_walk_within_budget_and_is_tight(unet) -> None:
    model, x = unet
    env = _env(model, x, 0.3)
    gen = torch.Generator().manual_seed(0)
    policies = [lambda s: 1.0, lambda s: 0.0] + [lambda s: float(torch.rand((), generator=gen))] * 20
    for policy in policies:
        kept, states, actions = env.walk(policy)
        assert env.cost.total(kept) <= env.budget  # feasible whatever the agent asks for
        assert len(states) == len(actions) == len(env.groups) and all(0 <= a <= 1 for a in actions)
        assert all(s.shape == (STATE_DIM,) and bool(((s >= 0) & (s <= 1)).all()) for s in states)
    kept, states, _ = env.walk(lambda s: 1.0)  # greedy agent: each group gets the most the budget still allows
    for t, g in enumerate(env.groups):
        prefix = {h.gid: kept[h.gid] for h in env.groups[:t]}
        assert kept[g.gid] == g.size or env.total_at(t + 1, {**prefix, g.gid: kept[g.gid] + 1}) > env.budget
        assert states[t][6] == pytest.approx((env.cost.base - env.cost.total(prefix)) / env.cost.base, abs=1e-6)
    assert states[0][6] == 0 and states[0][8] == 1  # nothing reduced yet, "previous action" keep-all
    with pytest.raises(ValueError, match="below"):
        _env(model, x, 0.02)  # not even every group at min_keep fits


def test_ddpg_update_reduces_the_critic_loss_on_a_fixed_batch() -> None:
    agent = DDPG(STATE_DIM, seed=0, **SMALL_AGENT)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.rand(16, STATE_DIM, generator=gen), torch.rand(16, 1, generator=gen),
             torch.rand(16, 1, generator=gen), torch.rand(16, STATE_DIM, generator=gen),
             (torch.arange(16) % 4 == 3).float()[:, None])  # fmt: skip
    agent.update_baseline(0.3)
    assert agent.update_baseline(0.7) == pytest.approx(0.5)  # moving average, alpha 0.5
    before = float(agent.critic_loss(batch).detach())
    for _ in range(150):
        agent.update(batch)
    assert float(agent.critic_loss(batch).detach()) < 0.2 * before
    draws = [truncated_normal(0.9, 0.5, gen) for _ in range(500)]
    assert min(draws) >= 0 and max(draws) <= 1 and 0.55 < sum(draws) / 500 < 0.8  # mass pushed inside [0, 1]
    assert truncated_normal(0.3, 0.0, gen) == 0.3


def test_search_meets_the_budget_and_is_reproducible_by_seed(unet) -> None:
    model, x = unet
    shapes = channel_shapes(model)
    evaluate = _fidelity(model, [random_input(300, 16, seed=1)])
    kw = {"episodes": 5, "warmup": 2, "agent_kw": SMALL_AGENT, "progress": False}
    p0, r0 = amc_search(model, x, evaluate, 0.5, seed=0, **kw)
    p0b, r0b = amc_search(model, x, evaluate, 0.5, seed=0, **kw)
    _, r1 = amc_search(model, x, evaluate, 0.5, seed=1, **kw)
    assert channel_shapes(model) == shapes  # not modified
    hist = r0["history"]
    assert [h["keep"] for h in hist] == [h["keep"] for h in r0b["history"]]
    assert [h["reward"] for h in hist] == [h["reward"] for h in r0b["history"]]
    assert channel_shapes(p0) == channel_shapes(p0b)
    assert [h["keep"] for h in hist] != [h["keep"] for h in r1["history"]]
    base = count_macs(model, x)
    assert all(h["macs"] <= 0.5 * base for h in hist)
    best = r0["best_episode"]
    assert count_macs(p0, x) == hist[best]["macs"] and evaluate(p0) == pytest.approx(hist[best]["metric"])
    assert hist[best]["reward"] == max(h["reward"] for h in hist)
    assert [h["critic_loss"] is None for h in hist] == [True, True, False, False, False]  # updates after warm-up
    assert hist[2]["sigma"] == 0.5 and hist[3]["sigma"] == pytest.approx(0.5 * 0.95)


def test_latency_budget_and_netadapt_at_the_same_budget(unet) -> None:
    model, x = unet
    base = count_macs(model, x)
    evaluate = _fidelity(model, [random_input(300, 16, seed=1)])

    def latency(m: torch.nn.Module) -> float:  # a stand-in for measured time: fixed cost + per-MAC cost
        return 2.0 + count_macs(m, x) / 1e5

    kw = {"episodes": 3, "warmup": 2, "agent_kw": SMALL_AGENT, "progress": False}
    pruned, rec = amc_search(model, x, evaluate, 0.6, budget_kind="latency", latency=latency, **kw)
    limit = 0.6 * rec["base_latency"]
    assert all(h["latency"] <= limit + 1e-9 for h in rec["history"]) and latency(pruned) <= limit + 1e-9
    with pytest.raises(ValueError, match="latency budget"):
        amc_search(model, x, evaluate, 0.5, budget_kind="latency", latency=lambda m: 50 + count_macs(m, x) / 1e6, **kw)
    # the same MAC budget for NetAdapt (its cost function is any measured cost) and AMC
    na, _ = netadapt_search(model, x, lambda m: count_macs(m, x), evaluate, 0.5, step_fraction=0.25, progress=False)
    amc, _ = amc_search(model, x, evaluate, 0.5, **kw)
    assert count_macs(na, x) <= 0.5 * base and count_macs(amc, x) <= 0.5 * base


def test_config_and_cli_run_amc(tmp_path) -> None:
    for bad in ({"amc_budget": 1.0}, {"amc_budget_kind": "flops"}, {"amc_episodes": 0}, {"amc_warmup": -1},
                {"amc_min_keep": 0.0}, {"amc_finetune_steps": 1.5}, {"amc_seed": True}):  # fmt: skip
        with pytest.raises(ValueError, match=f"config {next(iter(bad))}"):
            PruneConfig.from_dict(bad)
    with pytest.raises(ValueError, match="max_drop.*'amc'"):
        PruneConfig(schedule="amc", sensitivity=True, max_drop=1.0)
    config = {"schedule": "amc", "amc_episodes": 3, "amc_warmup": 2, "amc_budget": 0.5, "finetune_steps": 1,
              "latency_repeats": 1}  # fmt: skip
    report = run_prune_cli(tmp_path, config, train_scans=1)
    rec = report["amc"]
    assert len(rec["history"]) == 3 and rec["budget_kind"] == "macs"
    assert report["after"]["macs"] <= 0.5 * report["before"]["macs"] and report["kept_channels"]
    loaded, _ = load_model(tmp_path / "out" / "pruned.pt")
    assert sum(p.numel() for p in loaded.parameters()) == report["after"]["parameters"]
    assert main(["eval", "--checkpoint", str(tmp_path / "out" / "pruned.pt"), "--out", str(tmp_path / "e"),
                 "--batch-size", "1", "--no-progress"]) == 0  # fmt: skip
    assert "miou" in json.loads((tmp_path / "e" / "eval.json").read_text())["points"]
