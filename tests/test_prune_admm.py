"""ADMM channel pruning: the exact projection (channels, N:M), the residual falling, hard pruning, config and CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_prune_thinet import run_prune_cli
from toy_models import TinyUNet, random_input

from torchsparse_lite.__main__ import main
from torchsparse_lite.detection.backbone import SparseBackbone8x
from torchsparse_lite.models import MinkUNet, SparseResNetClassifier
from torchsparse_lite.models.stats import count_parameters
from torchsparse_lite.prune import (
    admm_project,
    build_dependency_graph,
    channel_slices,
    constraint_mask,
    hard_prune,
    nm_mask,
    prune_groups,
    top_channels,
    train_admm,
)
from torchsparse_lite.prune.admm import admm_groups, nm_holds
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.masks import prunable_weights
from torchsparse_lite.prune.task import segmentation_batches, segmentation_loss
from torchsparse_lite.train.checkpoint import load_model

TOL = {"rtol": 0, "atol": 1e-5}
NETS = {"unet": lambda: TinyUNet(width=8), "minkunet": lambda: MinkUNet(4, 5, cr=0.125),
        "resnet": lambda: SparseResNetClassifier(4, 3, depth=21, cr=0.25),
        "backbone": lambda: SparseBackbone8x(4, widths=(8, 8, 16, 16), out_channels=16)}  # fmt: skip


def _out(y: object) -> torch.Tensor:
    return y.feats if hasattr(y, "feats") else y


def _noisy_values(model, graph, nm=None, seed: int = 0) -> dict[str, torch.Tensor]:
    """``W + U`` with a random ``U`` on the constrained entries: a point to project."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {k: params[k].detach() + 0.3 * torch.randn(params[k].shape, generator=gen)
            for k in constraint_mask(model, graph, nm)}  # fmt: skip


def _channel_norms(model, graph, values) -> dict[int, torch.Tensor]:
    """Squared producer-side norms of ``values`` per channel, by narrowing the named tensors directly."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in admm_groups(model, graph):
        sq = torch.zeros(g.size)
        for p, dim, off in channel_slices(model, g, consumers=False):
            sq += values[names[id(p)]].narrow(dim, off, g.size).movedim(dim, 0).reshape(g.size, -1).pow(2).sum(1)
        out[g.gid] = sq
    return out


def test_top_channels_keeps_the_largest_and_one_per_group() -> None:
    norms = {1: torch.tensor([0.1, 0.2, 0.3]), 2: torch.tensor([5.0, 4.0]), 3: torch.tensor([0.05])}
    out = top_channels(norms, 3)  # group 3's only channel and group 1's largest are forced in, then 5.0
    assert out[1].tolist() == [0, 1] and out[2].tolist() == [1] and 3 not in out
    assert top_channels(norms, 6) == {}


def test_projection_is_the_nearest_point_of_the_channel_set() -> None:
    torch.manual_seed(0)
    model = MinkUNet(4, 5, cr=0.125).eval()
    graph = build_dependency_graph(model, random_input(500, 20), ["stem.0.conv"])
    v = _noisy_values(model, graph)
    z, remove = admm_project(model, graph, v, 0.4)
    groups = admm_groups(model, graph)
    total = sum(g.size for g in groups)
    assert sum(len(r) for r in remove.values()) == round(0.4 * total)
    assert all(len(remove.get(g.gid, ())) < g.size for g in groups)
    before, after = _channel_norms(model, graph, v), _channel_norms(model, graph, z)
    for g in groups:  # removed channels exactly zero, kept ones verbatim
        gone = torch.zeros(g.size, dtype=torch.bool)
        gone[remove.get(g.gid, torch.tensor([], dtype=torch.long))] = True
        assert bool((after[g.gid][gone] == 0).all()) and torch.equal(after[g.gid][~gone], before[g.gid][~gone])
    mask = constraint_mask(model, graph)
    for k in v:  # and nothing outside the producer-side slices moves
        assert torch.equal(z[k][~mask[k]], v[k][~mask[k]])
    dist = sum(float((v[k] - z[k]).pow(2).sum()) for k in v)
    removed = sum(float(before[gid][idx].sum()) for gid, idx in remove.items())
    assert dist == pytest.approx(removed, rel=1e-5)  # the slices are disjoint: the distance separates by channel
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):  # no other point of the set (same count, one channel per group at least) is nearer
        scores = {gid: torch.rand(len(n), generator=gen) for gid, n in before.items()}
        other = top_channels(scores, total - round(0.4 * total))
        assert sum(float(before[gid][idx].sum()) for gid, idx in other.items()) >= removed


def test_nm_projection_and_the_pruned_layout() -> None:
    torch.manual_seed(0)
    model = TinyUNet(width=8).eval()
    x = random_input()
    graph = build_dependency_graph(model, x)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in _noisy_values(model, graph, (2, 4)).items():
            params[k].copy_(v)
    z, remove = admm_project(model, graph, {k: params[k] for k in constraint_mask(model, graph, (2, 4))}, 0.3, (2, 4))
    _, plain = admm_project(model, graph, {k: params[k] for k in constraint_mask(model, graph)}, 0.3)
    assert {k: v.tolist() for k, v in remove.items()} == {k: v.tolist() for k, v in plain.items()}
    both = 0
    for name, layer in prunable_weights(model):  # among each layer's kept inputs: the 2 largest of every 4 verbatim
        kept = torch.ones(layer.weight.shape[1], dtype=torch.bool)  # Conv3d [K, Cin, Cout] / Linear [out, in]
        for g in graph.groups:
            kept[[s.offset + int(i) for s in g.consumers if s.name == name for i in remove.get(g.gid, ())]] = False
        sub = params[name + ".weight"].detach()[:, kept]
        want = sub * nm_mask(layer, 2, 4, weight=sub) if int(kept.sum()) >= 4 else sub.clone()
        out = graph.group(name).gid if any(p.name == name for g in graph.groups for p in g.producers) else None
        if out in remove:
            want.index_fill_(want.dim() - 1 if want.dim() == 3 else 0, remove[out], 0.0)  # removed outputs zero
            both += not bool(kept.all())
        assert torch.equal(z[name + ".weight"][:, kept], want), name
    assert both >= 2
    remove = hard_prune(model, graph, 0.3, (2, 4))
    pruned = prune_groups(model, graph, remove).model
    assert nm_holds(pruned, (2, 4)) and not nm_holds(TinyUNet(width=8), (2, 4))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), **TOL)


@pytest.mark.parametrize("net", list(NETS))
def test_hard_pruned_network_equals_the_projected_one(net: str) -> None:
    torch.manual_seed(0)
    model = NETS[net]().eval()
    x = random_input(600, 20, batch=2)
    graph = build_dependency_graph(model, x)
    remove = hard_prune(model, graph, 0.5)
    total = sum(g.size for g in admm_groups(model, graph))
    assert sum(len(r) for r in remove.values()) == round(0.5 * total)
    pruned = prune_groups(model, graph, remove).model
    with torch.no_grad():
        torch.testing.assert_close(_out(pruned(x)), _out(model(x)), **TOL)
    assert count_parameters(pruned) < count_parameters(model)


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    kw = {"voxel_size": 0.5, "max_points": 2000}
    return segmentation_batches(2, seed=0, **kw), segmentation_batches(1, seed=1000, **kw)


def test_training_drives_the_primal_residual_down(data) -> None:
    torch.manual_seed(0)
    model = MinkUNet(4, 9, cr=0.125)
    x = data[1][0][0]
    graph = build_dependency_graph(model, x, ["stem.0.conv"])
    history = train_admm(model, graph, data[0], segmentation_loss, 0.5, steps=80)
    residual = [h["primal_residual"] for h in history]
    assert [h["step"] for h in history] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert residual[-1] < 0.05 * residual[0] and residual[-1] == min(residual)
    assert history[-1]["rho"] == pytest.approx(10.0 * 1.3**7)
    with torch.no_grad():
        trained = model.eval()(x)
    gen = torch.Generator().manual_seed(0)  # as many channels, chosen at random, for comparison
    keep = graph.total_channels - round(0.5 * graph.total_channels)
    other = top_channels({g.gid: torch.rand(g.size, generator=gen) for g in graph.groups}, keep)
    with torch.no_grad():
        at_random = prune_groups(model, graph, other).model(x)
    remove = hard_prune(model, graph, 0.5)
    pruned = prune_groups(model, graph, remove).model
    assert sum(len(r) for r in remove.values()) == round(0.5 * graph.total_channels)
    with torch.no_grad():
        projected = model(x)
        torch.testing.assert_close(pruned(x), projected, **TOL)
        change = float((projected - trained).norm() / trained.norm())  # the trained weights are almost in the set
        assert change < 0.1 and float((at_random - trained).norm() / trained.norm()) > 5 * change
    with pytest.raises(ValueError, match="ratio"):
        train_admm(model, graph, data[0], segmentation_loss, 1.0)


def test_pipeline_config_and_cli_run_admm_then_eval(tmp_path) -> None:
    bad_configs = [
        ({"admm": {}}, ValueError),
        ({"admm": {"ratio": 1.0}}, ValueError),
        ({"admm": [0.5]}, TypeError),
        ({"admm": {"ratio": 0.5, "rho": 0}}, ValueError),
        ({"admm": {"ratio": 0.5, "rho_growth": 0.9}}, ValueError),
        ({"admm": {"ratio": 0.5, "admm_every": 0}}, ValueError),
        ({"admm": {"ratio": 0.5, "steps": 5, "admm_every": 10}}, ValueError),
        ({"admm": {"ratio": 0.5, "nm": {"n": 3, "m": 2}}}, ValueError),
        ({"admm": {"ratio": 0.5, "nm": [2, 4]}}, TypeError),
        ({"admm": {"ratio": 0.5, "rho": 1, "rh0": 1}}, ValueError),
    ]
    for bad, err in bad_configs:
        with pytest.raises(err, match="config admm"):
            PruneConfig.from_dict(bad)
    assert PruneConfig(admm={"ratio": 0.5}).admm == {"ratio": 0.5, "rho": 10.0, "rho_growth": 1.3, "steps": 100,
                                                     "admm_every": 10, "lr": 0.005, "nm": None}  # fmt: skip
    nm = {"n": 2, "m": 4}
    config = {"admm": {"ratio": 0.4, "steps": 20, "admm_every": 5, "nm": nm}, "nm": {**nm, "permute": False},
              "ratio": 0.0, "finetune_steps": 1, "latency_repeats": 1}  # fmt: skip
    report = run_prune_cli(tmp_path, config, train_scans=1)
    rec = report["admm"]
    assert rec["removed_fraction"] == pytest.approx(0.4, abs=0.01) and rec["pruned_vs_trained_max_abs_diff"] < 1e-5
    assert rec["nm_pattern_holds"] and report["nm_result"]["pattern_holds_after_finetune"]
    assert rec["history"][-1]["primal_residual"] < rec["history"][0]["primal_residual"]
    assert "kept_channels" not in report and report["after"]["macs"] < report["before"]["macs"]
    loaded, _ = load_model(tmp_path / "out" / "pruned.pt")
    assert sum(p.numel() for p in loaded.parameters()) == report["after"]["parameters"]
    assert main(["eval", "--checkpoint", str(tmp_path / "out" / "pruned.pt"), "--out", str(tmp_path / "eval"),
                 "--batch-size", "1", "--no-progress"]) == 0  # fmt: skip
    assert math.isfinite(json.loads((tmp_path / "eval" / "eval.json").read_text())["points"]["miou"])
