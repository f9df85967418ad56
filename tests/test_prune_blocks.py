"""Block / layer pruning: which blocks can go, criteria, removal, checkpoints, and composition with channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_models import random_input
from toy_models import small_minkunet as _net

from torchsparse_lite.models.blocks import ResidualBlock
from torchsparse_lite.prune import build_dependency_graph, prune_model
from torchsparse_lite.prune.blocks import (
    block_importance,
    prune_blocks,
    removable_blocks,
    remove_blocks,
    select_blocks,
)
from torchsparse_lite.prune.importance import Magnitude
from torchsparse_lite.prune.structure import apply_structure, structure_of
from torchsparse_lite.train.checkpoint import load_model, save_checkpoint


def test_removable_blocks_are_identity_shortcut_residuals() -> None:
    model = _net()
    names = removable_blocks(model)
    assert names
    for n in names:
        block = model.get_submodule(n)
        assert isinstance(block, ResidualBlock) and isinstance(block.downsample, nn.Identity)
    every = [n for n, m in model.named_modules() if isinstance(m, ResidualBlock)]
    assert set(names) < set(every)  # blocks that change channels or stride stay
    layers = removable_blocks(model, layers=True)
    assert set(names) <= set(layers)


@pytest.mark.parametrize("criterion", ["skip", "bn"])
def test_prune_blocks_removes_the_lowest_scored(criterion: str) -> None:
    model, x = _net(), random_input(500, 20, seed=1)
    res = prune_blocks(model, 0.5, criterion, batches=[(x, None)])
    assert len(res.removed) == round(0.5 * len(res.candidates))
    ranked = sorted(zip(res.scores, res.candidates))
    assert set(res.removed) == {n for _, n in ranked[: len(res.removed)]}
    for n in res.removed:
        assert isinstance(res.model.get_submodule(n), nn.Identity)
    with torch.no_grad():
        out = res.model(x)
    assert out.shape == (len(x), 5) and torch.isfinite(out).all()


def test_skip_score_is_the_output_change_without_the_block() -> None:
    model, x = _net(), random_input(400, 18, seed=2)
    names = removable_blocks(model)
    (score,) = block_importance(model, names[:1], "skip", [(x, None)])
    with torch.no_grad():
        ref = model(x)
        alone = remove_blocks(_net(), names[:1])(x)
    assert score == pytest.approx(float((alone - ref).norm() / ref.norm()), rel=1e-5)


def test_blocks_then_channels_and_checkpoint_round_trip(tmp_path) -> None:
    model, x = _net(), random_input(500, 20, seed=3)
    res = prune_blocks(model, 0.5, "bn")
    graph = build_dependency_graph(res.model, x)
    both, _ = prune_model(res.model, x, Magnitude(), 0.3, graph=graph)
    pruned = both.model
    record = structure_of(pruned)
    assert record["blocks"] == sorted(res.removed) and record["channel_shapes"]
    path = save_checkpoint(tmp_path / "blocks.pt", pruned, {"voxel_size": 0.1})
    loaded, _ = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=0)


def test_bad_block_arguments() -> None:
    model = _net()
    names = removable_blocks(model)
    with pytest.raises(ValueError, match="block ratio"):
        select_blocks(names, [0.0] * len(names), 1.5)
    with pytest.raises(ValueError, match="block criterion"):
        block_importance(model, names, "gamma")
    with pytest.raises(ValueError, match="needs batches"):
        block_importance(model, names, "skip")
    with pytest.raises(ValueError, match="cannot be removed"):
        remove_blocks(model, ["stem"])
    with pytest.raises(ValueError, match="does not have"):
        apply_structure(_net(), {"blocks": ["nope"]})


def test_detection_backbone_blocks_are_removable() -> None:
    from torchsparse_lite.detection.backbone import SparseBackbone8x, SparseBasicBlock  # noqa: PLC0415

    torch.manual_seed(0)
    backbone = SparseBackbone8x(4, (8, 16, 16, 16), (1, 1, 1, 1), 16).eval()
    names = removable_blocks(backbone)
    assert len(names) == 4 and all(isinstance(backbone.get_submodule(n), SparseBasicBlock) for n in names)
    x = random_input(400, 24, seed=9)
    res = prune_blocks(backbone, 0.5, "skip", batches=[(x, None)])
    assert len(res.removed) == 2
    with torch.no_grad():
        assert res.model(x).feats.shape[1] == 16
