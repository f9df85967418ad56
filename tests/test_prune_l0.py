"""L0 hard-concrete gates on channel groups: the gate law, exact folding, the target ratio, removal, config and CLI."""

from __future__ import annotations

import math

import pytest
import torch
from test_prune_thinet import run_prune_cli
from toy_models import TinyUNet, random_input

from torchsparse_lite.detection.backbone import SparseBackbone8x
from torchsparse_lite.models import MinkUNet, SparseResNetClassifier
from torchsparse_lite.prune import (
    HardConcreteGates,
    attach_gates,
    build_dependency_graph,
    closed_channels,
    fold_gates,
    prune_groups,
    train_l0,
)
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.l0 import GAMMA, ZETA
from torchsparse_lite.prune.task import segmentation_batches, segmentation_loss
from torchsparse_lite.train.checkpoint import load_model

TOL = {"rtol": 0, "atol": 1e-5}


def _out(y: object) -> torch.Tensor:
    return y.feats if hasattr(y, "feats") else y


def test_gate_law_matches_its_expected_l0() -> None:
    graph = build_dependency_graph(TinyUNet(width=8), random_input())
    gates = HardConcreteGates(graph)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for la in gates.log_alpha:
            la.copy_(torch.randn(la.shape, generator=gen) * 3)
    nonzero = torch.zeros(gates.total)
    for _ in range(4000):
        gates.sample(gen)
        z = torch.cat(list(gates.current.values()))
        assert bool(((z >= 0) & (z <= 1)).all())
        nonzero += (z > 0).float()
    keep = torch.cat(gates.keep_probability()).detach()
    assert float((nonzero / 4000 - keep).abs().max()) < 0.03  # P(z != 0) in closed form
    assert float(gates.expected_keep().detach()) == pytest.approx(float(keep.mean()), rel=1e-6)
    det = gates.deterministic()
    for gid, la in zip(gates.gids, gates.log_alpha):
        torch.testing.assert_close(det[gid], (torch.sigmoid(la) * (ZETA - GAMMA) + GAMMA).clamp(0, 1).detach())
    final = gates.final()
    for gid, k, la in zip(gates.gids, gates.keep_probability(), gates.log_alpha):
        n_zero = min(round(float((1 - k.detach()).sum())), len(k) - 1)
        closed = (final[gid] == 0).nonzero().flatten()
        assert len(closed) == n_zero  # exactly the expected number of zeros, the lowest log_alpha
        assert set(closed.tolist()) == set(torch.argsort(la.detach(), stable=True)[:n_zero].tolist())
    assert gates.closed_fraction() == sum(int((z == 0).sum()) for z in final.values()) / gates.total


@pytest.mark.parametrize("net", ["unet", "minkunet", "resnet", "backbone"])
def test_folded_gates_equal_the_gated_network_and_closed_channels_go(net: str) -> None:
    torch.manual_seed(0)
    model = {"unet": lambda: TinyUNet(width=8), "minkunet": lambda: MinkUNet(4, 5, cr=0.125),
             "resnet": lambda: SparseResNetClassifier(4, 3, depth=21, cr=0.25),
             "backbone": lambda: SparseBackbone8x(4, widths=(8, 8, 16, 16), out_channels=16)}[net]().eval()  # fmt: skip
    x = random_input(600, 20, batch=2)
    graph = build_dependency_graph(model, x)
    gates = HardConcreteGates(graph)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for la in gates.log_alpha:
            la.copy_(torch.randn(la.shape, generator=gen) * 2)
    gates.current = gates.final()
    assert 0 < sum(int((z == 0).sum()) for z in gates.current.values()) < gates.total
    handles = attach_gates(model, graph, gates)
    with torch.no_grad():
        gated = _out(model(x))
    for h in handles:
        h.remove()
    fold_gates(model, graph, gates.current)
    pruned = prune_groups(model, graph, closed_channels(gates.current)).model
    with torch.no_grad():
        torch.testing.assert_close(_out(model(x)), gated, **TOL)
        torch.testing.assert_close(_out(pruned(x)), gated, **TOL)


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    kw = {"voxel_size": 0.5, "max_points": 2000}
    return segmentation_batches(2, seed=0, **kw), segmentation_batches(1, seed=1000, **kw)


def test_training_reaches_the_target_ratio(data) -> None:
    torch.manual_seed(0)
    model = MinkUNet(4, 9, cr=0.125)
    x = data[1][0][0]
    graph = build_dependency_graph(model, x, ["stem.0.conv"])
    gates, history = train_l0(model, graph, data[0], segmentation_loss, 0.5, steps=80)
    keep = [h["expected_keep"] for h in history]
    assert keep[0] > 0.95 and abs(keep[-1] - 0.5) < 0.05  # the expected-L0 term is pulled to the target
    assert sum(b < a for a, b in zip(keep[:40], keep[1:41])) >= 35  # and falls steadily on the way
    final = gates.final()
    closed = closed_channels(final)
    ratio = sum(len(v) for v in closed.values()) / graph.total_channels
    assert abs(ratio - 0.5) < 0.05 and history[-1]["closed"] == pytest.approx(ratio, abs=0.02)
    gates.current = final
    handles = attach_gates(model, graph, gates)
    with torch.no_grad():
        gated = model.eval()(x)
    for h in handles:
        h.remove()
    fold_gates(model, graph, final)
    with torch.no_grad():
        torch.testing.assert_close(prune_groups(model, graph, closed).model(x), gated, **TOL)
    with pytest.raises(ValueError, match="ratio"):
        train_l0(model, graph, data[0], segmentation_loss, 1.0)


def test_pipeline_config_and_cli_run_l0(data, tmp_path) -> None:
    bad_configs = [
        ({"l0": {}}, ValueError),
        ({"l0": {"ratio": 1.0}}, ValueError),
        ({"l0": [0.5]}, TypeError),
        ({"l0": {"ratio": 0.5, "steps": 0}}, ValueError),
        ({"l0": {"ratio": 0.5, "lr": 0}}, ValueError),
    ]
    for bad, err in bad_configs:
        with pytest.raises(err, match="config l0"):
            PruneConfig.from_dict(bad)
    config = {"l0": {"ratio": 0.4, "steps": 40}, "ratio": 0.0, "finetune_steps": 1, "latency_repeats": 1}
    report = run_prune_cli(tmp_path, config, train_scans=2)
    rec = report["l0"]
    assert abs(rec["removed_fraction"] - 0.4) < 0.1 and rec["pruned_vs_trained_max_abs_diff"] < 1e-5
    assert "kept_channels" not in report  # ratio 0: the gates alone
    assert report["after"]["macs"] < report["before"]["macs"]
    loaded, _ = load_model(tmp_path / "out" / "pruned.pt")
    assert sum(p.numel() for p in loaded.parameters()) == report["after"]["parameters"]
    assert math.isfinite(report["after"]["metric"])
