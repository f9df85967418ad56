"""AutoSlim: widths, the sandwich step, slicing = masking, sorting, greedy slimming, the search, config and CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from test_prune_thinet import run_prune_cli
from toy_models import TinyUNet, random_input

from torchsparse_lite.__main__ import main
from torchsparse_lite.detection.backbone import SparseBackbone8x
from torchsparse_lite.models import MinkUNet, SparseResNetClassifier
from torchsparse_lite.models.stats import count_macs
from torchsparse_lite.prune import (
    ChannelCost,
    WidthSpace,
    attach_gates,
    autoslim_search,
    build_dependency_graph,
    channel_shapes,
    get_criterion,
    greedy_slim,
    mask_groups,
    recalibrate_bn,
    slice_widths,
    train_supernet,
)
from torchsparse_lite.prune.autoslim import PrefixMasks, masked_score, sandwich_step, sort_by_importance
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.train.checkpoint import load_model

TOL = {"rtol": 0, "atol": 1e-5}


def _out(y: object) -> torch.Tensor:
    return y.feats if hasattr(y, "feats") else y


def _batches(n: int, seed: int = 10) -> list:
    out = []
    for s in range(n):
        x = random_input(300, 16, seed=seed + s)
        out.append((x, torch.randint(0, 3, (x.feats.shape[0],), generator=torch.Generator().manual_seed(s))))
    return out


@pytest.fixture
def unet() -> tuple:
    torch.manual_seed(0)
    model = TinyUNet(width=8).eval()
    x = random_input(300, 16)
    return model, x, WidthSpace(build_dependency_graph(model, x), 0.25, 0.25)


def test_width_space_and_the_sandwich_widths(unet) -> None:
    _, _, space = unet
    gen = torch.Generator().manual_seed(0)
    widths = space.sandwich(3, gen)
    assert len(widths) == 5 and widths[0] == space.full() and widths[1] == space.smallest()
    for w in widths[2:]:
        assert all(w[g] in space.grid(g) for g in space.sizes)
    assert space.grid(next(g for g, n in space.sizes.items() if n == 16)) == [16, 12, 8, 4]
    g8 = next(g for g, n in space.sizes.items() if n == 8)
    assert space.grid(g8) == [8, 6, 4, 2] and space.shrink({**space.full(), g8: 2}, g8)[g8] == 2


def test_the_sandwich_step_trains_the_largest_and_the_smallest_network(unet) -> None:
    model, x, space = unet
    batch = (x, torch.randint(0, 3, (x.feats.shape[0],), generator=torch.Generator().manual_seed(0)))
    masks = PrefixMasks(space)
    handles = attach_gates(model, space.graph, masks)
    model.train()
    widths = [space.full(), space.smallest()]
    losses = sandwich_step(model, masks, widths, batch, F.cross_entropy, distill=False)
    model.zero_grad()
    sandwich_step(model, masks, widths[1:], batch, F.cross_entropy, distill=False)
    for g in space.graph.groups:  # the smallest network alone: nothing past its prefixes learns
        for p in g.producers:
            grad = model.get_submodule(p.name).weight.grad[:, :, p.offset : p.offset + g.size]
            assert float(grad[:, :, space.n_min[g.gid] :].abs().max()) == 0 and float(grad.abs().max()) > 0
    distilled = sandwich_step(model, masks, widths, batch, F.cross_entropy, distill=True)
    for h in handles:
        h.remove()
    full, small = (slice_widths(model, space, w).train() for w in widths)  # the networks the losses are of
    with torch.no_grad():
        teacher, student = full(x), small(x)
        want = [float(F.cross_entropy(m(x), batch[1])) for m in (full, small)]
    assert losses == pytest.approx(want, rel=1e-5)
    soft = -(F.softmax(teacher, 1) * F.log_softmax(student, 1)).sum(1).mean()
    assert distilled[1] == pytest.approx(float(soft), rel=1e-5) and distilled[0] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize("net", ["unet", "minkunet", "resnet", "backbone"])
def test_the_slimmed_network_equals_the_masked_supernet(net: str) -> None:
    torch.manual_seed(0)
    model = {"unet": lambda: TinyUNet(width=8), "minkunet": lambda: MinkUNet(4, 5, cr=0.25),
             "resnet": lambda: SparseResNetClassifier(4, 3, depth=21, cr=0.25),
             "backbone": lambda: SparseBackbone8x(4, widths=(8, 8, 16, 16), out_channels=16)}[net]().eval()  # fmt: skip
    x = random_input(500, 20, batch=2)
    space = WidthSpace(build_dependency_graph(model, x), 0.2, 0.2)
    if net == "unet":  # trained a little as a supernet, so the weights and BN statistics are not the initial ones
        batches = [(x, torch.randint(0, 3, (x.feats.shape[0],), generator=torch.Generator().manual_seed(0)))]
        train_supernet(model, space, batches, F.cross_entropy, 2, n_random=1, progress=False)
    widths = space.random(torch.Generator().manual_seed(3))
    assert widths != space.full()
    masks = PrefixMasks(space)
    masks.set(widths)
    handles = attach_gates(model, space.graph, masks)
    with torch.no_grad():
        masked = _out(model(x))
    for h in handles:
        h.remove()
    sliced = slice_widths(model, space, widths)
    with torch.no_grad():
        torch.testing.assert_close(_out(sliced(x)), masked, **TOL)
        torch.testing.assert_close(_out(mask_groups(model, space.graph, space.remove(widths))(x)), masked, **TOL)
    assert count_macs(sliced, x) == ChannelCost(model, space.graph, x).total(widths)
    outs, before = [], copy.deepcopy(model.state_dict())

    def capture(m: torch.nn.Module) -> float:
        with torch.no_grad():
            outs.append(_out(m(x)))
        return 0.0

    calib = [(random_input(500, 20, batch=2, seed=5), None)]  # greedy's candidates: masked, BN recalibrated
    masked_score(model, space, widths, calib, capture)
    capture(recalibrate_bn(slice_widths(model, space, widths), calib))
    torch.testing.assert_close(outs[0], outs[1], **TOL)
    for k, v in model.state_dict().items():  # and the supernet's own statistics are back
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_sorting_keeps_the_function_and_puts_important_channels_first(unet) -> None:
    model, x, space = unet
    ordered, graph = sort_by_importance(model, space.graph, x, "l1")
    with torch.no_grad():
        torch.testing.assert_close(ordered(x), model(x), **TOL)
    for s in get_criterion("l1")(ordered, graph).values():
        assert bool((s[:-1] >= s[1:]).all())


def test_greedy_slimming_takes_the_best_candidate_until_the_budget(unet) -> None:
    model, x, space = unet
    weight = {g.name: 1.0 + 1.7 * i for i, g in enumerate(space.graph.groups)}  # the cost of losing a channel
    full = channel_shapes(model)

    def evaluate(m: torch.nn.Module) -> float:  # fake metric read off the slimmed network's widths
        shapes = channel_shapes(m)
        return -sum(w * (full[name][1] - shapes[name][1]) for name, w in weight.items())

    macs = ChannelCost(model, space.graph, x)
    widths, history = greedy_slim(space, lambda w: evaluate(slice_widths(model, space, w)), macs.total,
                                  0.5 * macs.base, progress=False)  # fmt: skip
    current = space.full()
    for rec in history:  # replay: every step is the arg-max over all one-step shrinks
        cands = {g: space.shrink(current, g) for g in current if current[g] > space.n_min[g]}
        scores = {g: evaluate(slice_widths(model, space, w)) for g, w in cands.items()}
        assert rec["group"] == max(scores, key=scores.get) and rec["metric"] == scores[rec["group"]]
        current = cands[rec["group"]]
        assert rec["cost"] == macs.total(current)
    assert current == widths and macs.total(widths) <= 0.5 * macs.base < history[-2]["cost"]
    assert len({r["group"] for r in history}) > 1  # it moved on once the cheapest group was at its minimum


def test_search_meets_mac_and_latency_budgets_with_recalibrated_bn(unet) -> None:
    model, x, _ = unet
    shapes, base = channel_shapes(model), count_macs(model, x)
    train, val = _batches(2), [random_input(300, 16, seed=1)]
    with torch.no_grad():
        ref = [model(v) for v in val]

    def evaluate(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return -float(sum((m(v) - r).pow(2).mean() for v, r in zip(val, ref)))

    kw = {"steps": 3, "step_fraction": 0.25, "progress": False}
    slim, rec = autoslim_search(model, x, train, F.cross_entropy, evaluate, 0.5, **kw)
    assert channel_shapes(model) == shapes and rec["feasible"]
    assert count_macs(slim, x) == rec["final_cost"] <= 0.5 * base == 0.5 * rec["base_cost"]
    slim_shapes = channel_shapes(slim)
    assert all(slim_shapes[name][1] == w for name, (_, w) in rec["widths"].items())
    again = recalibrate_bn(copy.deepcopy(slim), train)  # the statistics already are the exact averages
    for a, b in zip(again.modules(), slim.modules()):
        if isinstance(a, torch.nn.modules.batchnorm._BatchNorm):
            torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-5, atol=1e-6)

    def latency(m: torch.nn.Module) -> float:  # a stand-in for measured time
        return 2.0 + count_macs(m, x) / 1e5

    slim, rec = autoslim_search(model, x, train, F.cross_entropy, evaluate, 0.7, budget_kind="latency",
                                latency=latency, **kw)  # fmt: skip
    assert rec["feasible"] and latency(slim) == rec["final_cost"] <= 0.7 * latency(model)


def test_config_and_cli_run_autoslim(tmp_path) -> None:
    for bad in ({"autoslim_budget": 0.0}, {"autoslim_budget_kind": "time"}, {"autoslim_steps": -1},
                {"autoslim_n_random": 0.5}, {"autoslim_step_fraction": 1.0}, {"autoslim_min_width": 1.5}):  # fmt: skip
        with pytest.raises(ValueError, match=f"config {next(iter(bad))}"):
            PruneConfig.from_dict(bad)
    with pytest.raises(TypeError, match="config autoslim_distill"):
        PruneConfig(autoslim_distill="yes")
    with pytest.raises(ValueError, match="max_drop.*'autoslim'"):
        PruneConfig(schedule="autoslim", sensitivity=True, max_drop=1.0)
    config = {"schedule": "autoslim", "autoslim_steps": 2, "autoslim_n_random": 1, "autoslim_step_fraction": 0.5,
              "autoslim_min_width": 0.5, "autoslim_budget": 0.95, "finetune_steps": 1, "latency_repeats": 1,
              "importance_batches": 1}  # fmt: skip
    report = run_prune_cli(tmp_path, config, train_scans=1)
    rec = report["autoslim"]
    assert rec["feasible"] and rec["greedy"] and len(rec["supernet"]) == 2
    assert report["after"]["macs"] <= 0.95 * report["before"]["macs"] and report["kept_channels"]
    loaded, _ = load_model(tmp_path / "out" / "pruned.pt")
    assert sum(p.numel() for p in loaded.parameters()) == report["after"]["parameters"]
    assert main(["eval", "--checkpoint", str(tmp_path / "out" / "pruned.pt"), "--out", str(tmp_path / "e"),
                 "--batch-size", "1", "--no-progress"]) == 0  # fmt: skip
    assert "miou" in json.loads((tmp_path / "e" / "eval.json").read_text())["points"]
