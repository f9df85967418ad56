"""Channel pruning surgery: dependency groups, pruned == masked original, save/load, custom nets."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from toy_models import TinyUNet, random_input

from torchsparse_lite import SparseTensor, cat
from torchsparse_lite import nn as spnn
from torchsparse_lite.models import MinkUNet
from torchsparse_lite.prune import (
    apply_channel_shapes,
    build_dependency_graph,
    channel_shapes,
    mask_groups,
    prune_groups,
    prune_model,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _random_removal(graph, frac: float, seed: int = 0) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {g.gid: torch.randperm(g.size, generator=gen)[: max(1, int(frac * g.size))] for g in graph.groups}


def _randomise_norms(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=gen)
            m.running_mean = torch.randn(m.num_features, generator=gen)
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5


def test_groups_of_tiny_unet() -> None:
    g = build_dependency_graph(TinyUNet(), random_input())
    res = g.group("down.1.main.1.conv")
    assert {s.name for s in res.producers} == {"down.1.main.1.conv", "down.1.downsample.conv"}
    assert {s.name for s in res.norms} == {"down.1.main.1.bn", "down.1.downsample.bn"}
    stem = g.group("stem.conv")  # the skip enters the decoder concat after the 8 up-sampled channels
    assert {(s.name, s.offset) for s in stem.consumers} == {
        ("down.0.conv", 0), ("up.blocks.0.main.0.conv", 8), ("up.blocks.0.downsample.conv", 8)
    }  # fmt: skip
    assert g.fixed == {"classifier": "model output"}
    assert len(g.groups) == 7 and g.total_channels == 72


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("frac", [0.25, 0.5, 0.75])
def test_pruned_equals_masked_tiny(frac: float, train_mode: bool) -> None:
    model = TinyUNet(width=8)
    _randomise_norms(model)
    model.train(train_mode)
    graph = build_dependency_graph(model, random_input(seed=1))
    remove = _random_removal(graph, frac)
    pruned = prune_groups(model, graph, remove).model
    masked = mask_groups(model, graph, remove)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    for seed in (2, 3):  # any input, other sizes than the trace input
        x = random_input(500, 20, seed=seed, batch=2)
        torch.testing.assert_close(pruned(x), masked(x), **TOL)


def test_pruned_equals_masked_minkunet_and_save_load(tmp_path) -> None:
    model = MinkUNet(4, 5, cr=0.25).eval()
    _randomise_norms(model)
    result, plan = prune_model(model, random_input(200, 16), "l1", 0.5, ignore=["stem.0.conv"])
    assert 0.45 <= plan.removed_fraction <= 0.5
    assert model.stem[0].conv.out_channels == result.model.stem[0].conv.out_channels  # excluded
    x = random_input(600, 24, seed=5)
    out = result.model(x)
    torch.testing.assert_close(out, mask_groups(model, plan.graph, plan.remove)(x), **TOL)
    # save as shapes + state_dict, load into a freshly built net
    torch.save({"config": model.config(), "shapes": channel_shapes(result.model),
                "state_dict": result.model.state_dict()}, tmp_path / "p.pt")  # fmt: skip
    ck = torch.load(tmp_path / "p.pt")
    fresh = apply_channel_shapes(MinkUNet(4, 5, cr=0.25), ck["shapes"])
    fresh.load_state_dict(ck["state_dict"])
    torch.testing.assert_close(fresh.eval()(x), out, rtol=0, atol=0)
    buf = io.BytesIO()  # whole-module pickle works too
    torch.save(result.model, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(x), out, rtol=0, atol=0)


def test_pruned_model_trains() -> None:
    model = TinyUNet()
    result, _ = prune_model(model, random_input(), "l2", 0.5)
    pruned = result.model.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    x = random_input(seed=4)
    y = torch.randint(0, 3, (len(x),))
    loss = nn.functional.cross_entropy(pruned(x), y)
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in pruned.parameters())


class _Gated(nn.Module):
    """Functional ops between layers: gating product, scalar scale, channel split (a barrier)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = spnn.Conv3d(4, 8, 3)
        self.b = spnn.Conv3d(4, 8, 3)
        self.c = spnn.Conv3d(8, 6, 3)
        self.d = spnn.Conv3d(6, 2, 1)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        h = self.a(x).feats * torch.sigmoid(self.b(x).feats) * 0.5
        y = self.c(x.replace(h))
        left, right = torch.split(y.feats, 3, dim=1)
        z = cat([x.replace(left + right), x.replace(left)])
        return self.d(z).feats


def test_generic_ops_and_barrier() -> None:
    model = _Gated()
    graph = build_dependency_graph(model, random_input())
    assert [sorted(s.name for s in g.producers) for g in graph.groups] == [["a", "b"]]  # gate ties a and b
    assert "split" in graph.fixed["c"]
    remove = {graph.groups[0].gid: torch.tensor([1, 4, 6])}
    x = random_input(seed=9)
    torch.testing.assert_close(prune_groups(model, graph, remove).model(x), mask_groups(model, graph, remove)(x), **TOL)


def test_bad_arguments() -> None:
    model = TinyUNet()
    with pytest.raises(ValueError, match="ignore"):
        build_dependency_graph(model, random_input(), ignore=["nope"])
    graph = build_dependency_graph(model, random_input())
    gid = graph.groups[0].gid
    with pytest.raises(ValueError, match="keep at least one"):
        prune_groups(model, graph, {gid: torch.arange(8)})
    with pytest.raises(ValueError, match="outside"):
        prune_groups(model, graph, {gid: torch.tensor([8])})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pruned_model_runs_on_gpu() -> None:
    model = TinyUNet().eval()
    result, _ = prune_model(model, random_input(), "l1", 0.5)
    x = random_input(seed=6)
    cpu = result.model(x)
    gpu = result.model.cuda()(x.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
