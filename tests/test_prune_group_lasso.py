"""Group lasso on channel groups: the slices a channel owns, the proximal step, channels trained to zero and removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_models import TinyUNet, random_input

from torchsparse_lite.detection.backbone import SparseBackbone8x
from torchsparse_lite.models import MinkUNet, SparseResNetClassifier
from torchsparse_lite.models.stats import count_parameters
from torchsparse_lite.prune import (
    GroupNorm,
    build_dependency_graph,
    channel_norms,
    channel_slices,
    get_criterion,
    group_lasso_penalty,
    proximal_step,
    prune_groups,
    train_group_lasso,
    zeroed_channels,
)
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.pipeline import run_pipeline
from torchsparse_lite.prune.task import segmentation_batches, segmentation_loss
from torchsparse_lite.tensor import SparseTensor
from torchsparse_lite.train.checkpoint import load_model

TOL = {"rtol": 0, "atol": 1e-5}


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    kw = {"voxel_size": 0.5, "max_points": 2000}
    return segmentation_batches(1, seed=0, **kw), segmentation_batches(1, seed=1000, **kw)


def test_slices_are_exactly_what_the_surgery_removes() -> None:
    model = MinkUNet(4, 9, cr=0.125).eval()
    x = random_input(500, 20)
    graph = build_dependency_graph(model, x, ["stem.0.conv"])
    total = count_parameters(model)
    for g in graph.groups[::3]:
        slices = channel_slices(model, g)
        owned = sum(p.narrow(dim, off, g.size).select(dim, 0).numel() for p, dim, off in slices)
        pruned = prune_groups(model, graph, {g.gid: torch.tensor([0])}).model
        assert total - count_parameters(pruned) == owned, g.name
    norms = channel_norms(model, graph)
    penalty = group_lasso_penalty(model, graph, 0.5).detach()
    assert float(penalty) == pytest.approx(0.5 * float(sum(n.sum() for n in norms.values())), rel=1e-5)


def test_proximal_step_zeroes_whole_channels_below_tau() -> None:
    torch.manual_seed(0)
    model = TinyUNet(width=8).eval()
    x = random_input()
    graph = build_dependency_graph(model, x)
    before = channel_norms(model, graph)
    tau = float(torch.cat(list(before.values())).median())
    proximal_step(model, graph, tau)
    after = channel_norms(model, graph)
    for g in graph.groups:
        small = before[g.gid] <= tau
        assert bool((after[g.gid][small] == 0).all()) and bool((after[g.gid] <= before[g.gid] + 1e-6).all())
        for p, dim, off in channel_slices(model, g):  # every slice of a zero channel is zero, biases and BN too
            zero = p.narrow(dim, off, g.size).movedim(dim, 0)[small]
            assert bool((zero == 0).all())
    assert sum(int((a > 0).sum()) for a in after.values()) > 0
    remove = zeroed_channels(after)
    with torch.no_grad():
        torch.testing.assert_close(prune_groups(model, graph, remove).model(x), model(x), **TOL)


def test_zeroed_channels_keeps_one_per_group() -> None:
    norms = {1: torch.tensor([0.0, 0.0, 0.0]), 2: torch.tensor([0.0, 0.5, 1e-9]), 3: torch.tensor([1.0, 2.0])}
    out = zeroed_channels(norms, threshold=1e-6)
    assert out[1].tolist() == [1, 2] and out[2].tolist() == [0, 2] and 3 not in out


def _trained_to_zero(model: nn.Module, batches: list, loss_fn, strength: float, steps: int, ignore: list[str]):
    x = batches[0][0]
    graph = build_dependency_graph(model, x, ignore)
    history = train_group_lasso(model, graph, batches, loss_fn, strength, steps, lr=0.05)
    remove = zeroed_channels(channel_norms(model, graph))
    pruned = prune_groups(model, graph, remove).model.eval()
    return graph, history, remove, pruned


def test_minkunet_channels_go_to_zero_and_are_removed(data) -> None:
    torch.manual_seed(0)
    model = MinkUNet(4, 9, cr=0.125)
    graph, history, remove, pruned = _trained_to_zero(model, data[0], segmentation_loss, 2.0, 30, ["stem.0.conv"])
    zeros = [h["zero_channels"] for h in history]
    assert zeros[0] == 0 and zeros[-1] >= 0.2 * graph.total_channels
    assert history[-1]["penalty"] < 0.5 * history[0]["penalty"]
    norms = channel_norms(model, graph)
    dead_groups = sum(bool((n == 0).all()) for n in norms.values())  # a group keeps one channel, even a zero one
    assert sum(len(v) for v in remove.values()) == zeros[-1] - dead_groups
    for g in graph.groups:  # whole channels are exactly zero
        for p, dim, off in channel_slices(model, g):
            if g.gid in remove:
                assert bool((p.narrow(dim, off, g.size).movedim(dim, 0)[remove[g.gid]] == 0).all())
    x = data[1][0][0]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model.eval()(x), **TOL)  # the pruned model is the trained model
    assert count_parameters(pruned) < count_parameters(model)


@pytest.mark.parametrize("net", ["resnet", "backbone"])
def test_resnet_and_detection_backbone(net: str) -> None:
    torch.manual_seed(0)
    batches = [(random_input(600, 20, batch=2, seed=s), None) for s in range(2)]
    if net == "resnet":
        model = SparseResNetClassifier(4, 3, depth=21, cr=0.25)
        batches = [(x, torch.tensor([0, 2])) for x, _ in batches]
        loss_fn = nn.functional.cross_entropy
    else:
        model = SparseBackbone8x(4, widths=(8, 8, 16, 16), out_channels=16)

        def loss_fn(out: SparseTensor, _) -> torch.Tensor:
            return (out.feats - 1.0).pow(2).mean()

    first = next(n for n, m in model.named_modules() if hasattr(m, "kernel_map"))
    graph, history, remove, pruned = _trained_to_zero(model, batches, loss_fn, 2.0, 25, [first])
    assert remove and history[-1]["zero_channels"] > 0
    x = random_input(600, 20, batch=2, seed=7)
    with torch.no_grad():
        a, b = pruned(x), model.eval()(x)
    torch.testing.assert_close(a.feats if net == "backbone" else a, b.feats if net == "backbone" else b, **TOL)


def test_pipeline_group_lasso_then_group_norm_ratio(data, tmp_path) -> None:
    cfg = PruneConfig.from_dict({"group_lasso": {"strength": 2.0, "steps": 20}, "ratio": 0.2, "criterion": "group_norm",
                                 "finetune_steps": 1, "latency_repeats": 1})  # fmt: skip
    report = run_pipeline(MinkUNet(4, 9, cr=0.125), cfg, *data, 9, tmp_path, progress=False)
    rec = report["group_lasso"]
    assert rec["removed_fraction"] > 0 and rec["pruned_vs_trained_max_abs_diff"] < 1e-5
    assert rec["history"][-1]["zero_channels"] >= sum(b - a for b, a in rec["kept_channels"].values()) > 0
    assert sum(b - a for b, a in report["kept_channels"].values()) > 0  # then 20 % more by group norm
    assert report["pruned_vs_masked_max_abs_diff"] < 1e-4
    loaded, _ = load_model(tmp_path / "pruned.pt")
    x = data[1][0][0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), report["model"](x), rtol=0, atol=0)
    assert isinstance(get_criterion("group_norm"), GroupNorm)


@pytest.mark.parametrize(
    "bad, err",
    [({"strength": 0}, ValueError), ({"steps": 0}, ValueError), ({"steps": 2.5}, ValueError), ({"lr": -1}, ValueError),
     ({"threshold": -0.1}, ValueError), ({"strenght": 1}, ValueError)],
)  # fmt: skip
def test_config_rejects_bad_group_lasso(bad: dict, err: type) -> None:
    with pytest.raises(err, match="config group_lasso"):
        PruneConfig.from_dict({"group_lasso": bad})
    with pytest.raises(TypeError, match="config group_lasso"):
        PruneConfig(group_lasso=0.5)
    assert PruneConfig(group_lasso={"threshold": None}).group_lasso == {"strength": 0.5, "steps": 100, "lr": 0.05,
                                                                          "threshold": None}  # fmt: skip
