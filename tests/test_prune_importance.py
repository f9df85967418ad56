"""Importance criteria on cases with a known answer, and local / global selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_models import TinyUNet, random_input

from torchsparse_lite.prune import (
    FPGM,
    APoZ,
    BNScale,
    Fisher,
    Magnitude,
    RandomImportance,
    Taylor,
    bn_l1_penalty,
    build_dependency_graph,
    select_channels,
)

PLANT = "up.blocks.0.main.0.conv"  # a group with a single producer
CH = 5


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinyUNet(width=8).eval()
    graph = build_dependency_graph(model, random_input())
    batches = [(random_input(300, 14, seed=s), torch.randint(0, 3, (1,))) for s in range(2)]
    batches = [(x, torch.randint(0, 3, (len(x),))) for x, _ in batches]
    return model, graph, batches


def _loss(out, y):
    return nn.functional.cross_entropy(out, y)


@pytest.mark.parametrize("crit", [Magnitude(1), Magnitude(2), Taylor(), Fisher()], ids=lambda c: c.name)
def test_planted_zero_filter_pruned_first(setup, crit) -> None:
    model, graph, batches = setup
    conv = model.get_submodule(PLANT)
    with torch.no_grad():
        conv.weight[:, :, CH] = 0  # the filter producing channel CH is zero: the channel carries nothing
    g = graph.group(PLANT)
    scores = crit(model, graph, batches, _loss)
    assert int(torch.argmin(scores[g.gid])) == CH
    assert float(scores[g.gid][CH]) == 0.0
    assert all(s.shape == (gr.size,) for gr, s in ((graph.group(k), v) for k, v in scores.items()))
    remove = select_channels(scores, graph, {PLANT: 1 / 8}, mode="local")
    assert remove == {g.gid: torch.tensor([CH])} or remove[g.gid].tolist() == [CH]


def test_bn_scale_zero_gamma(setup) -> None:
    model, graph, _ = setup
    with torch.no_grad():
        model.up.blocks[0].main[0].bn.weight.fill_(1.0)
        model.up.blocks[0].main[0].bn.weight[CH] = 0.0
    scores = BNScale()(model, graph)
    assert int(torch.argmin(scores[graph.group(PLANT).gid])) == CH


def test_bn_l1_penalty_gradient() -> None:
    model = TinyUNet()
    pen = bn_l1_penalty(model, 1e-3)
    pen.backward()
    bn = model.stem.bn
    n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert float(pen.detach()) == pytest.approx(1e-3 * sum(m.num_features for m in model.modules()
                                                   if isinstance(m, nn.BatchNorm1d)))  # fmt: skip
    torch.testing.assert_close(bn.weight.grad, torch.full_like(bn.weight, 1e-3))
    assert n_bn > 0


def test_apoz_picks_always_zero_channel(setup) -> None:
    model, graph, batches = setup
    bn = model.up.blocks[0].main[0].bn
    with torch.no_grad():
        bn.weight[CH] = 0.0
        bn.bias[CH] = -1.0  # after BN the channel is always -1, after ReLU always 0
    scores = APoZ()(model, graph, batches)
    s = scores[graph.group(PLANT).gid]
    assert float(s[CH]) == 0.0 and int(torch.argmin(s)) == CH
    assert bool((s[torch.arange(8) != CH] > 0).all())


def test_fpgm_picks_median_filter(setup) -> None:
    model, graph, _ = setup
    conv = model.get_submodule(PLANT)
    k, cin, _ = conv.weight.shape
    gen = torch.Generator().manual_seed(3)
    centre = torch.randn(k, cin, generator=gen)
    d = [torch.randn(k, cin, generator=gen) for _ in range(4)]
    # a symmetric cloud around `centre` plus one outlier: `centre` minimises the summed distances
    others = [centre + s * v for v in d[:3] for s in (1, -1)] + [centre + 3 * d[3]]
    with torch.no_grad():
        for j in range(8):
            conv.weight[:, :, j] = centre if j == CH else others.pop(0)
    s = FPGM()(model, graph)[graph.group(PLANT).gid]
    assert int(torch.argmin(s)) == CH


def test_random_is_seeded(setup) -> None:
    model, graph, _ = setup
    a, b = RandomImportance(1)(model, graph), RandomImportance(1)(model, graph)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="needs data"):
        Taylor()(model, graph)


def test_local_and_global_selection(setup) -> None:
    model, graph, _ = setup
    scores = Magnitude(1)(model, graph)
    local = select_channels(scores, graph, 0.5, mode="local")
    assert {gid: len(v) for gid, v in local.items()} == {g.gid: g.size // 2 for g in graph.groups}
    per_layer = select_channels(scores, graph, {"stem.conv": 0.25, "default": 0.0}, mode="local")
    assert {gid: len(v) for gid, v in per_layer.items()} == {graph.group("stem.conv").gid: 2}
    glob = select_channels(scores, graph, 0.5, mode="global", max_ratio=0.75)
    assert sum(len(v) for v in glob.values()) == graph.total_channels // 2
    assert all(len(v) <= 0.75 * graph.group(gid).size for gid, v in glob.items())
    # global picks the lowest normalised scores: scale one group's scores down -> it loses the most
    scaled = dict(scores)
    gid = graph.group("stem.conv").gid
    scaled[gid] = scores[gid].clone()
    scaled[gid][:4] *= 1e-3
    assert set(select_channels(scaled, graph, 4 / 72, mode="global")[gid].tolist()) == {0, 1, 2, 3}
    rounded = select_channels(scores, graph, 0.5, mode="global", round_to=4)
    assert all((graph.group(g).size - len(v)) % 4 == 0 for g, v in rounded.items())
    with pytest.raises(TypeError):
        select_channels(scores, graph, {"stem.conv": 0.5}, mode="global")
    with pytest.raises(ValueError, match="ratio"):
        select_channels(scores, graph, 1.5)
