"""ThiNet: the regression view of a layer, the contribution Gram, the greedy order, the least-squares refit."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from toy_models import TinyUNet, random_input, small_minkunet

from torchsparse_lite import nn as spnn
from torchsparse_lite.__main__ import main
from torchsparse_lite.detection.backbone import SparseBackbone8x
from torchsparse_lite.models import SparseResNetClassifier
from torchsparse_lite.prune import (
    build_dependency_graph,
    contribution_grams,
    greedy_removal_order,
    plan_pruning,
    prune_model,
    reconstruct_consumers,
)
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.methods import shrunk_layers
from torchsparse_lite.prune.regression import feats_of, layer_weight, patches, sample_rows
from torchsparse_lite.prune.task import finetune, segmentation_batches
from torchsparse_lite.prune.thinet import removal_ranks
from torchsparse_lite.train.checkpoint import load_model


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, spnn.Conv3d | nn.Linear)}


def test_patches_reproduce_every_layer_of_minkunet() -> None:
    model = small_minkunet()
    seen: dict[str, tuple[str, float]] = {}

    def make_hook(name: str):
        def hook(module, args, output):
            rows = sample_rows(feats_of(output).shape[0], 40, 0)
            y = torch.einsum("skc,kco->so", patches(module, args[0], rows), layer_weight(module))
            y = y + module.bias if module.bias is not None else y
            seen[name] = (getattr(module, "mode", "linear"), float((y - feats_of(output)[rows]).abs().max()))

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in _layers(model).items()]
    with torch.no_grad():
        model(random_input(600, 20))
    for h in handles:
        h.remove()
    assert {mode for mode, _ in seen.values()} == {"submanifold", "conv", "transposed", "linear"}
    assert max(err for _, err in seen.values()) < 1e-5


def test_gram_equals_the_consumers_output_change() -> None:
    """``1' G_TT 1`` is the squared change of every consumer's output when channels ``T`` are cut."""
    torch.manual_seed(0)
    model = TinyUNet(width=8).eval()
    x = random_input(300, 12)
    graph = build_dependency_graph(model, x)
    grams = contribution_grams(model, graph, [(x, None)], samples=10**6)
    inputs: dict[str, object] = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: inputs.update({n: a[0]}))
               for n in _layers(model)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for g in graph.groups:
        cut = torch.tensor([0, 3, 5])
        change = 0.0
        for s in g.consumers:
            layer = model.get_submodule(s.name)
            masked = copy.deepcopy(layer)
            with torch.no_grad():
                masked.weight[:, s.offset + cut] = 0  # Conv3d [K, Cin, Cout] / Linear [out, in]
            with torch.no_grad():
                change += float((feats_of(layer(inputs[s.name])) - feats_of(masked(inputs[s.name]))).pow(2).sum())
        gram = grams[g.gid]
        assert float(gram[cut][:, cut].sum()) == pytest.approx(change, rel=1e-6), g.name


def test_greedy_order_follows_its_definition_and_catches_cancelling_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    z[:, 4] = -z[:, 1] * 1.01  # channels 1 and 4 cancel each other
    order = greedy_removal_order(z.t() @ z).tolist()
    assert sorted(order) == list(range(6))
    for k in range(6):  # each next channel is the one whose removal (with the earlier ones) costs least
        cost = {j: float(z[:, order[:k] + [j]].sum(1).pow(2).sum()) for j in range(6) if j not in order[:k]}
        assert order[k] == min(cost, key=cost.get)
    first = min(order.index(1), order.index(4))
    assert abs(order.index(1) - order.index(4)) == 1 and first < 5  # the partner follows at once
    ranks = removal_ranks(z.t() @ z)
    assert ranks[order].tolist() == list(range(1, 7))  # the first removed scores lowest


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, list, list]:
    """A small MinkUNet trained 30 steps on two scans, and a held-out scan."""
    kw = {"voxel_size": 0.5, "max_points": 2000}
    train, held = segmentation_batches(2, seed=0, **kw), segmentation_batches(1, seed=1000, **kw)
    model = small_minkunet(num_classes=9)
    finetune(model, train, 30, lr=0.01, progress=False)
    return model, train, held


def _layer_errors(original: nn.Module, pruned: nn.Module, names: list[str], kept: dict, x) -> dict[str, float]:
    """Relative squared error of each layer's output (pruned network, its own inputs) on ``x``."""
    outs: dict[str, dict[str, torch.Tensor]] = {"o": {}, "p": {}}
    handles = []
    for key, net in (("o", original), ("p", pruned)):
        for n in names:
            handles.append(net.get_submodule(n).register_forward_hook(
                lambda m, a, o, n=n, key=key: outs[key].update({n: feats_of(o).detach()})))  # fmt: skip
    with torch.no_grad():
        original(x), pruned(x)
    for h in handles:
        h.remove()
    return {n: float((outs["p"][n] - outs["o"][n][:, kept[n]]).pow(2).sum() / outs["o"][n][:, kept[n]].pow(2).sum())
            for n in names}  # fmt: skip


def test_least_squares_reduces_next_layer_error_on_held_out_voxels(trained) -> None:
    model, train, held = trained
    x = held[0][0]
    res, plan = prune_model(model, x, "thinet", 0.5, mode="local", ignore=["stem.0.conv"], batches=train)
    unfit = copy.deepcopy(res.model)
    names = shrunk_layers(plan.graph, model, res)
    kept = {n: res.kept[n]["out"] for n in names}
    before = _layer_errors(model, res.model, names, kept, x)
    report = reconstruct_consumers(model, res.model, names, train, samples=4096, kept_out=kept)
    after = _layer_errors(model, res.model, names, kept, x)
    assert set(report) == set(names) and len(names) > 10
    assert all(r["error_after"] <= r["error_before"] for r in report.values())
    assert sum(after.values()) < 0.6 * sum(before.values())  # held-out voxels, not the fitted samples
    assert sum(after[n] < before[n] for n in names) >= 0.8 * len(names)
    with torch.no_grad():
        assert float((res.model(x) - model(x)).pow(2).sum()) < 0.3 * float((unfit(x) - model(x)).pow(2).sum())


def test_thinet_selection_changes_the_consumers_least(trained) -> None:
    """Per group, ThiNet's greedy set moves the consumers' outputs (``1' G_TT 1``) less than L1's set of that size."""
    model, train, held = trained
    graph = build_dependency_graph(model, held[0][0], ["stem.0.conv"])
    grams = contribution_grams(model, graph, train, samples=512)
    cost = {}
    for name in ("l1", "thinet", "random"):
        plan = plan_pruning(model, held[0][0], name, 0.5, mode="local", graph=graph, batches=train)
        cost[name] = [float(grams[gid][t][:, t].sum() / grams[gid].diagonal().sum()) for gid, t in plan.remove.items()]
    assert sum(cost["thinet"]) < 0.8 * min(sum(cost["l1"]), sum(cost["random"]))
    assert sum(a <= b for a, b in zip(cost["thinet"], cost["l1"])) >= 0.9 * len(cost["l1"])


@pytest.mark.parametrize("net", ["resnet", "backbone"])
def test_thinet_and_refit_on_resnet_and_detection_backbone(net: str) -> None:
    torch.manual_seed(0)
    model = (SparseResNetClassifier(4, 5, depth=21, cr=0.25) if net == "resnet"
             else SparseBackbone8x(4, widths=(8, 8, 16, 16), out_channels=16)).eval()  # fmt: skip
    batches = [(random_input(800, 24, batch=2, seed=s), None) for s in range(2)]
    x = batches[0][0]
    res, plan = prune_model(model, x, "thinet", 0.5, batches=batches, ignore=[_first_conv(model)])
    names = shrunk_layers(plan.graph, model, res)
    report = reconstruct_consumers(
        model, res.model, names, batches, 256, kept_out={n: res.kept[n]["out"] for n in names}
    )
    assert names and all(r["error_after"] <= r["error_before"] for r in report.values())
    assert sum(r["error_after"] for r in report.values()) < sum(r["error_before"] for r in report.values())
    with torch.no_grad():
        assert torch.isfinite(feats_of(res.model(batches[1][0]))).all()


def _first_conv(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, spnn.Conv3d))


def run_prune_cli(tmp_path, config: dict, train_scans: int) -> dict:
    """``python -m torchsparse_lite prune`` on a freshly trained tiny MinkUNet with ``config``; its report."""
    data = {"train_scans": train_scans, "val_scans": 1, "voxel_size": 0.5, "max_points": 2000}
    (tmp_path / "prune.json").write_text(json.dumps({**config, "data": data}))
    argv = ["prune", "--config", str(tmp_path / "prune.json"), "--train-steps", "2", "--cr", "0.125",
            "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())


def test_config_and_cli_run_thinet_with_reconstruction(tmp_path) -> None:
    assert PruneConfig(criterion="thinet").reconstructs and not PruneConfig(criterion="l1").reconstructs
    assert PruneConfig(criterion="l1", reconstruct=True).reconstructs
    assert not PruneConfig(criterion="thinet", schedule="iterative").reconstructs
    for bad, err in (({"regression_samples": 0}, ValueError), ({"reconstruct": "yes"}, TypeError),
                     ({"reconstruct": True, "schedule": "netadapt"}, ValueError)):  # fmt: skip
        with pytest.raises(err, match="config (regression_samples|reconstruct)"):
            PruneConfig.from_dict(bad)
    config = {"criterion": "thinet", "ratio": 0.4, "mode": "local", "regression_samples": 128, "finetune_steps": 1,
              "latency_repeats": 1, "importance_batches": 1}  # fmt: skip
    report = run_prune_cli(tmp_path, config, train_scans=1)
    layers = report["reconstruct"]["layers"]
    assert layers and all(r["error_after"] <= r["error_before"] for r in layers.values())
    assert report["pruned_vs_masked_max_abs_diff"] < 1e-4
    loaded, _ = load_model(tmp_path / "out" / "pruned.pt")
    assert sum(p.numel() for p in loaded.parameters()) == report["after"]["parameters"]
