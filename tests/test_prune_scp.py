"""SCP soft channel masks: the BN + ReLU law, the relaxed Bernoulli, exact folding, the target, config and CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_prune_thinet import run_prune_cli
from torch import nn
from toy_models import TinyUNet, random_input

from torchsparse_lite.__main__ import main
from torchsparse_lite.detection.backbone import SparseBackbone8x
from torchsparse_lite.models import MinkUNet, SparseResNetClassifier
from torchsparse_lite.prune import (
    SoftChannelMasks,
    attach_gates,
    build_dependency_graph,
    closed_channels,
    expected_zeros,
    fold_gates,
    prune_groups,
    train_scp,
)
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.task import num_classes_of, segmentation_batches, segmentation_loss
from torchsparse_lite.train.checkpoint import load_model

TOL = {"rtol": 1e-5, "atol": 1e-5}
NETS = {"unet": lambda: TinyUNet(width=8), "minkunet": lambda: MinkUNet(4, 5, cr=0.125),
        "resnet": lambda: SparseResNetClassifier(4, 3, depth=21, cr=0.25),
        "backbone": lambda: SparseBackbone8x(4, widths=(8, 8, 16, 16), out_channels=16)}  # fmt: skip


class HiddenHead(TinyUNet):
    """TinyUNet with a hidden ``Linear -> ReLU`` before the classifier: a channel group without a batch norm."""

    def __init__(self) -> None:
        super().__init__(width=8)
        self.hidden, self.act, self.classifier = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)

    def forward(self, x):
        x0 = self.stem(x)
        return self.classifier(self.act(self.hidden(self.up(self.down(x0), x0).feats)))


def _out(y: object) -> torch.Tensor:
    return y.feats if hasattr(y, "feats") else y


def _random_bn(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen))


def test_keep_probability_is_the_chance_that_bn_and_relu_pass_the_channel() -> None:
    model = MinkUNet(4, 9, cr=0.125)
    _random_bn(model)
    x = random_input(2000, 30, batch=2)
    graph = build_dependency_graph(model, x, ["stem.0.conv"])
    masks = SoftChannelMasks(model, graph)
    normal = torch.distributions.Normal(0.0, 1.0)
    outputs: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(s.name).register_forward_hook(lambda m, a, o, n=s.name: outputs.update({n: _out(o)}))
             for g in graph.groups for s in g.norms]  # fmt: skip
    with torch.no_grad():
        model.train()(x)  # BN normalises by the batch: its output is gamma * x_hat + beta
    for h in hooks:
        h.remove()
    errors, multi = [], 0
    for g, p in zip(graph.groups, masks.keep_probability()):
        bns = [model.get_submodule(s.name) for s in g.norms]
        off = normal.cdf(torch.stack([-bn.bias / bn.weight.abs() for bn in bns]).detach()).prod(0)
        torch.testing.assert_close(p.detach(), 1 - off, rtol=1e-4, atol=1e-6)  # 1 - prod_s Phi(-beta_s / |gamma_s|)
        if len(bns) == 1:  # Phi(beta / |gamma|) is the fraction of positive BN outputs, up to non-normality
            errors.append((outputs[g.norms[0].name] > 0).float().mean(0) - p.detach())
        multi += len(bns) > 1
    assert multi >= 8 and float(torch.cat(errors).abs().mean()) < 0.05
    head = HiddenHead().eval()  # its hidden Linear -> ReLU group has no batch norm: a learned logit instead
    head_graph = build_dependency_graph(head, random_input())
    fallback = SoftChannelMasks(head, head_graph)
    ((key, logit),) = fallback.logits.items()
    assert key == str(head_graph.group("hidden").gid) and torch.equal(logit.detach(), torch.full((16,), 3.0))
    bn_params = {id(p) for m in head.modules() if isinstance(m, nn.BatchNorm1d) for p in m.parameters()}
    assert {id(p) for p in fallback.mask_parameters()} == bn_params | {id(logit)}


def test_masks_are_relaxed_bernoulli_draws_differentiable_in_the_bn_parameters() -> None:
    model = TinyUNet(width=8)
    _random_bn(model, seed=1)
    graph = build_dependency_graph(model.eval(), random_input())
    masks = SoftChannelMasks(model, graph, temperature=0.5)
    gen = torch.Generator().manual_seed(0)
    on = torch.zeros(masks.total)
    for _ in range(4000):
        with torch.no_grad():
            masks.sample(gen)
        m = torch.cat([masks.current[gid] for gid in masks.gids])
        assert bool(((m >= 0) & (m <= 1)).all())
        on += (m > 0.5).float()
    keep = torch.cat(masks.keep_probability()).detach()
    assert float((on / 4000 - keep).abs().max()) < 0.03  # P(m > 1/2) = p exactly
    masks.sample(gen)
    torch.cat(list(masks.current.values())).sum().backward()
    assert all(p.grad is not None and bool((p.grad != 0).any()) for p in masks.mask_parameters())
    final = masks.final()
    for gid, k in zip(masks.gids, masks.keep_probability()):
        closed = (final[gid] == 0).nonzero().flatten()  # the expected number of off channels, the least likely
        assert set(closed.tolist()) == set(expected_zeros(k, k).tolist())
        assert bool(((final[gid] == 0) | (final[gid] == 1)).all())  # and the others open
    assert masks.closed_fraction() == sum(int((z == 0).sum()) for z in final.values()) / masks.total


def test_vanishing_bn_gammas_keep_the_masks_finite() -> None:
    """A converged net has BN gammas near 0 (beta / |gamma| huge): the law saturates instead of going NaN."""
    torch.manual_seed(0)
    model = MinkUNet(4, num_classes_of(kitti=False), cr=0.125)
    with torch.no_grad():
        for i, bn in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
            bn.weight[: 1 + i % 3] = 1e-9 * (-1) ** i
            bn.bias.uniform_(-2, 2)
    batches = segmentation_batches(2, seed=0, voxel_size=0.6, max_points=1500)
    graph = build_dependency_graph(model.eval(), batches[0][0])
    masks, hist = train_scp(model, graph, batches, segmentation_loss, 0.3, 10.0, 20, 1e-3, 0.05)
    assert all(math.isfinite(h["expected_keep"]) for h in hist)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("net", list(NETS))
def test_folded_masks_equal_the_masked_network_and_closed_channels_go(net: str) -> None:
    torch.manual_seed(0)
    model = NETS[net]().eval()
    _random_bn(model, seed=2)
    x = random_input(600, 20, batch=2)
    graph = build_dependency_graph(model, x)
    masks = SoftChannelMasks(model, graph)
    masks.current = masks.final()
    assert 0 < sum(int((z == 0).sum()) for z in masks.current.values()) < masks.total
    handles = attach_gates(model, graph, masks)
    with torch.no_grad():
        masked = _out(model(x))
    for h in handles:
        h.remove()
    fold_gates(model, graph, masks.current)
    pruned = prune_groups(model, graph, closed_channels(masks.current)).model
    with torch.no_grad():
        torch.testing.assert_close(_out(model(x)), masked, **TOL)
        torch.testing.assert_close(_out(pruned(x)), masked, **TOL)


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    kw = {"voxel_size": 0.5, "max_points": 2000}
    return segmentation_batches(2, seed=0, **kw), segmentation_batches(1, seed=1000, **kw)


def test_training_pulls_the_expected_keep_to_the_target(data) -> None:
    torch.manual_seed(0)
    model = MinkUNet(4, 9, cr=0.125)
    x = data[1][0][0]
    graph = build_dependency_graph(model, x, ["stem.0.conv"])
    masks, history = train_scp(model, graph, data[0], segmentation_loss, 0.7, steps=40)
    keep, penalty = [h["expected_keep"] for h in history], [h["penalty"] for h in history]
    assert keep[0] > 0.55 and abs(keep[-1] - 0.3) < 0.03  # from Phi(0) = 0.5 (more on residual groups) to 1 - 0.7
    assert penalty[-1] < 0.01 * penalty[0]
    final = masks.final()
    closed = closed_channels(final)
    ratio = sum(len(v) for v in closed.values()) / graph.total_channels
    assert abs(ratio - 0.7) < 0.05 and history[-1]["closed"] == pytest.approx(ratio, abs=0.02)
    masks.current = final
    handles = attach_gates(model, graph, masks)
    with torch.no_grad():
        masked = model.eval()(x)
    for h in handles:
        h.remove()
    fold_gates(model, graph, final)
    with torch.no_grad():
        torch.testing.assert_close(prune_groups(model, graph, closed).model(x), masked, **TOL)
    with pytest.raises(ValueError, match="temperature"):
        train_scp(model, graph, data[0], segmentation_loss, 0.5, temperature=0)


def test_pipeline_config_and_cli_run_scp_then_eval(tmp_path) -> None:
    bad_configs = [
        ({"scp": {}}, ValueError),
        ({"scp": {"ratio": -0.1}}, ValueError),
        ({"scp": 0.5}, TypeError),
        ({"scp": {"ratio": 0.5, "temperature": 0}}, ValueError),
        ({"scp": {"ratio": 0.5, "steps": 1.5}}, ValueError),
        ({"scp": {"ratio": 0.5, "tau": 1}}, ValueError),
    ]
    for bad, err in bad_configs:
        with pytest.raises(err, match="config scp"):
            PruneConfig.from_dict(bad)
    assert PruneConfig(scp={"ratio": 0.5}).scp == {"ratio": 0.5, "strength": 10.0, "steps": 100, "lr": 0.05,
                                                   "temperature": 0.5}  # fmt: skip
    config = {"scp": {"ratio": 0.4, "steps": 30}, "ratio": 0.0, "finetune_steps": 1, "latency_repeats": 1}
    report = run_prune_cli(tmp_path, config, train_scans=1)
    rec = report["scp"]
    assert abs(rec["removed_fraction"] - 0.4) < 0.1 and rec["pruned_vs_trained_max_abs_diff"] < 1e-4
    assert abs(rec["expected_keep"] - 0.6) < 0.05 and "kept_channels" not in report
    assert report["after"]["macs"] < report["before"]["macs"]
    loaded, _ = load_model(tmp_path / "out" / "pruned.pt")
    assert sum(p.numel() for p in loaded.parameters()) == report["after"]["parameters"]
    assert main(["eval", "--checkpoint", str(tmp_path / "out" / "pruned.pt"), "--out", str(tmp_path / "eval"),
                 "--batch-size", "1", "--no-progress"]) == 0  # fmt: skip
    assert math.isfinite(json.loads((tmp_path / "eval" / "eval.json").read_text())["points"]["miou"])
