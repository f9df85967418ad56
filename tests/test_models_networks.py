"""MinkUNet / SparseResNet: shapes, gradients, structure, published parameter counts."""

from __future__ import annotations

import pytest
import torch

from torchsparse_lite import SparseTensor
from torchsparse_lite.models import (
    MinkUNet,
    ResidualBlock,
    SparseResNet,
    UpBlock,
    build_from_config,
    build_model,
    count_parameters,
)
from torchsparse_lite.utils import sparse_collate


def lidar_like(n_samples: int = 2, n: int = 400, seed: int = 0) -> SparseTensor:
    """A batch of small surface-like point sets (a ground plane plus a wall), 4 feature channels."""
    g = torch.Generator().manual_seed(seed)
    tensors = []
    for _ in range(n_samples):
        ground = torch.cat([torch.randint(0, 24, (n, 2), generator=g), torch.zeros(n, 1, dtype=torch.long)], 1)
        wall = torch.cat([torch.randint(0, 24, (n // 2, 1), generator=g), torch.full((n // 2, 1), 23),
                          torch.randint(0, 10, (n // 2, 1), generator=g)], 1)
        xyz = torch.unique(torch.cat([ground, wall]), dim=0).int()
        coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32), xyz], 1)
        tensors.append(SparseTensor(torch.randn(len(xyz), 4, generator=g), coords))
    return sparse_collate(tensors)


@pytest.mark.parametrize(("name", "cr"), [("minkunet", 0.125), ("minkunet34", 0.125)])
def test_minkunet_forward_backward(name: str, cr: float) -> None:
    x = lidar_like()
    model = build_model(name, 4, 5, cr=cr)
    logits = model(x)
    assert logits.shape == (len(x), 5)
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient (DDP needs all used): {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_minkunet_batch_independence() -> None:
    """Sample 0's logits do not depend on sample 1 (eval-mode BN): the batch dimension never mixes."""
    model = build_model("minkunet", 4, 3, cr=0.125).eval()
    both = lidar_like(2, seed=1)
    alone = SparseTensor(both.feats[both.coords[:, 0] == 0], both.coords[both.coords[:, 0] == 0])
    with torch.no_grad():
        a = model(both)[both.coords[:, 0] == 0]
        b = model(alone)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_published_parameter_count() -> None:
    """cr=1, 4 inputs, 19 classes: SPVNAS (Tang et al., ECCV 2020) lists MinkowskiNet at 21.7M parameters."""
    n = count_parameters(build_model("minkunet", 4, 19, cr=1.0))
    assert round(n / 1e6, 1) == 21.7
    assert n == 21_723_315  # regression value of this implementation
    # MinkUNet-34 (2, 3, 4, 6 encoder blocks) adds residual blocks only: a regression value, no published reference
    assert count_parameters(build_model("minkunet34", 4, 19, cr=1.0)) == 37_875_123


def test_width_multiplier_and_rebuild() -> None:
    model = build_model("minkunet", 4, 7, cr=0.5)
    assert model.channels == (16, 16, 32, 64, 128, 128, 64, 48, 48)
    clone = build_from_config(model.config())
    clone.load_state_dict(model.state_dict())
    assert count_parameters(clone) == count_parameters(model)
    pruned = MinkUNet(4, 7, channels=(8, 8, 16, 16, 32, 32, 16, 8, 8))
    assert pruned(lidar_like(1)).shape[1] == 7


def test_traceable_structure() -> None:
    model = build_model("minkunet", 4, 3, cr=0.25)
    names = [n for n, _ in model.named_children()]
    assert names == ["stem", "stage1", "stage2", "stage3", "stage4", "up1", "up2", "up3", "up4", "classifier"]
    assert isinstance(model.up1, UpBlock) and isinstance(model.stage1[1], ResidualBlock)
    assert isinstance(model.stage1[1].downsample, torch.nn.Identity)  # 8 -> 8 channels at cr 0.25
    assert [n for n, _ in model.stage2[1].downsample.named_children()] == ["conv", "bn"]  # 8 -> 16
    assert [n for n, _ in model.up1.named_children()] == ["up", "blocks"]
    assert set(dict(model.stage1[0].named_children())) == {"conv", "bn", "relu"}


@pytest.mark.parametrize("depth", [21, 34])
def test_sparse_resnet(depth: int) -> None:
    x = lidar_like()
    backbone = SparseResNet(depth, in_channels=4, width_multiplier=0.25)
    outs = backbone(x)
    assert len(outs) == len(backbone.out_channels)
    assert [o.feats.shape[1] for o in outs] == backbone.out_channels
    assert outs[1].stride == (2, 2, 2) and outs[3].stride == (8, 8, 8)
    clf = build_model(f"resnet{depth}", 4, 6, cr=0.25)
    logits = clf(x)
    assert logits.shape == (2, 6)
    logits.sum().backward()
    assert all(p.grad is not None for p in clf.parameters())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("pointnet", 4, 3)
    with pytest.raises(ValueError, match="cr"):
        build_model("minkunet", 4, 3, cr=0)
    with pytest.raises(ValueError, match="stride-1"):
        coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
        build_model("minkunet", 4, 3, cr=0.125)(SparseTensor(torch.randn(2, 4), coords, stride=2))
