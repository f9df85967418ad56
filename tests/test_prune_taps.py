"""Tap (kernel-offset) pruning: groups by shared map, criteria, budgets, masks = removal, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from toy_models import random_input
from toy_models import small_minkunet as _net

from torchsparse_lite import nn as snn
from torchsparse_lite.prune.structure import apply_structure, structure_of
from torchsparse_lite.prune.surgery import copy_model
from torchsparse_lite.prune.taps import (
    mask_taps,
    prune_taps,
    remove_taps,
    select_taps,
    tap_groups,
    tap_importance,
)
from torchsparse_lite.train.checkpoint import load_model, save_checkpoint


def _loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(out, target)


def _batches(x):
    return [(x, torch.randint(0, 5, (len(x),), generator=torch.Generator().manual_seed(1)))]


def test_groups_follow_shared_maps() -> None:
    model, x = _net(), random_input(600, 24, seed=2)
    groups = tap_groups(model, x, strided=True)
    by_conv = {c: g for g in groups for c in g.convs}
    convs = {n for n, m in model.named_modules() if isinstance(m, snn.Conv3d) and m.kernel_volume > 1}
    assert set(by_conv) == convs  # every conv with more than one tap is in exactly one group
    subm_only = tap_groups(model, x)  # the default: submanifold convs only
    assert {c for g in subm_only for c in g.convs} == {c for c in convs if model.get_submodule(c).submanifold}
    subm = [g for g in groups if g.fixed]
    assert subm and all(len(g.convs) > 1 for g in subm)  # a stage's submanifold convs share one map
    down_up = [g for g in groups if any(model.get_submodule(c).transposed for c in g.convs)]
    assert down_up and all(len(g.convs) == 2 for g in down_up)  # a down conv and the transposed conv reusing its map
    for g in groups:
        assert len(g.pairs) == len(g.taps) and g.macs_per_pair > 0


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "contribution"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_pruned_model_equals_masked_model_and_removes_map_work(criterion: str, scope: str) -> None:
    model, x = _net(), random_input(600, 24, seed=3)
    res = prune_taps(model, x, 0.4, criterion, scope, batches=_batches(x), loss_fn=_loss)
    for sc in res.scores:
        assert torch.isclose(sc.sum(), torch.tensor(1.0)) and (sc >= 0).all()
    before, after = res.map_entries()
    assert after < before
    masked = mask_taps(copy_model(model), res.groups, res.kept)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), masked(x), rtol=1e-5, atol=1e-5)
    for g in res.groups:
        kept = res.kept[g.name]
        if g.fixed:  # submanifold: the centre stays, and the kept set stays mirror-closed
            assert g.taps[g.fixed[0]] in kept and all(26 - t in kept for t in kept)
            assert res.model.get_submodule(g.name).kernel_map(x).symmetric
        for name in g.convs:
            conv = res.model.get_submodule(name)
            full = tuple(range(math.prod(conv.kernel_size)))
            assert conv.weight.shape[0] == len(kept) and (conv.taps or full) == kept


def test_layer_scope_meets_each_budget_and_global_meets_the_total() -> None:
    model, x = _net(), random_input(600, 24, seed=4)
    groups = tap_groups(model, x)
    scores = tap_importance(model, groups, "magnitude")
    for scope in ("global", "layer"):
        kept = select_taps(groups, scores, 0.3, scope)
        work = [(sum(g.pairs) * g.macs_per_pair,
                 sum(p for t, p in zip(g.taps, g.pairs) if t not in kept[g.name]) * g.macs_per_pair) for g in groups]
        if scope == "global":
            assert sum(r for _, r in work) >= 0.3 * sum(t for t, _ in work)
        else:  # every group reaches its share unless it is down to one droppable unit
            for (total, removed), g in zip(work, groups):
                assert removed >= 0.3 * total or len(kept[g.name]) <= len(g.fixed) + 2
    assert select_taps(groups, scores, 0.0) == {g.name: g.taps for g in groups}


def test_lower_scores_go_first() -> None:
    model, x = _net(), random_input(400, 20, seed=5)
    groups = tap_groups(model, x, strided=True)  # a strided group: single taps, no mirror pairs
    g = next(g for g in groups if not g.fixed)
    scores = [torch.full((len(h.taps),), 1.0 / len(h.taps)) for h in groups]
    gi = groups.index(g)
    scores[gi] = torch.arange(1, len(g.taps) + 1, dtype=torch.float32)
    scores[gi] /= scores[gi].sum()
    kept = select_taps(groups, scores, 0.2, "layer")[g.name]
    dropped = [t for t in g.taps if t not in kept]
    assert dropped and dropped == list(g.taps[: len(dropped)])  # the lowest-scored taps, in order


def test_checkpoint_round_trip_restores_taps(tmp_path) -> None:
    model, x = _net(), random_input(500, 20, seed=6)
    res = prune_taps(model, x, 0.5)
    assert structure_of(res.model)["taps"]
    path = save_checkpoint(tmp_path / "taps.pt", res.model, {"voxel_size": 0.1})
    loaded, _ = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), res.model(x), rtol=0, atol=0)
    fresh = apply_structure(_net(1), structure_of(res.model))
    assert [m.weight.shape for m in fresh.modules() if isinstance(m, snn.Conv3d)] == [
        m.weight.shape for m in res.model.modules() if isinstance(m, snn.Conv3d)
    ]


def test_bad_tap_arguments() -> None:
    model, x = _net(), random_input(300, 16, seed=7)
    groups = tap_groups(model, x)
    scores = tap_importance(model, groups)
    with pytest.raises(ValueError, match="tap ratio"):
        select_taps(groups, scores, 1.0)
    with pytest.raises(ValueError, match="tap scope"):
        select_taps(groups, scores, 0.2, "network")
    with pytest.raises(ValueError, match="tap criterion"):
        tap_importance(model, groups, "hessian")
    with pytest.raises(ValueError, match="loss_fn"):
        tap_importance(model, groups, "taylor", _batches(x))
    with pytest.raises(ValueError, match="not taps of this conv"):
        remove_taps(copy_model(model), groups, {g.name: (99,) for g in groups})
    with pytest.raises(ValueError, match="does not have"):
        apply_structure(_net(), {"taps": {"nope.conv": [0, 1]}})
