"""Parameter and MAC counts against hand computation on tiny networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchsparse_lite import SparseTensor
from torchsparse_lite import nn as spnn
from torchsparse_lite.models import build_model, count_macs, count_macs_by_layer, count_parameters


def three_points() -> SparseTensor:
    """(0,0,0) and (1,0,0) are 3x3x3 neighbours; (5,5,5) is isolated."""
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 5, 5, 5]], dtype=torch.int32)
    return SparseTensor(torch.randn(3, 2), coords)


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        spnn.Conv3d(2, 3, 3),  # submanifold
        spnn.BatchNorm(3),
        spnn.ReLU(),
        spnn.Conv3d(3, 4, 2, stride=2),  # strided
        spnn.Linear(4, 5, bias=True),
    )


def test_count_parameters_by_hand() -> None:
    net = tiny_net()
    expected = 27 * 2 * 3 + (3 + 3) + 8 * 3 * 4 + (4 * 5 + 5)
    assert count_parameters(net) == expected
    net[4].weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == expected - 20


def test_count_macs_by_hand() -> None:
    x = three_points()
    net = tiny_net()
    # submanifold 3x3x3: 3 centre pairs + 2 pairs between the two neighbours = 5 pairs.
    # stride-2 k=2: every input meets exactly one output: 3 pairs, 2 outputs ((0,0,0) and (2,2,2)).
    # linear: 2 rows.
    per_layer = count_macs_by_layer(net, x)
    assert per_layer == {"0": 5 * 2 * 3, "3": 3 * 3 * 4, "4": 2 * 4 * 5}
    assert count_macs(net, x) == 30 + 36 + 40
    # BN adds rows x C = 3 x 3 when asked for.
    assert count_macs(net, x, include_norm=True) == 106 + 9
    assert net.training  # restored


def test_count_macs_transposed_and_residual() -> None:
    """A transposed conv reuses the down map: same pair count as the strided conv."""

    class DownUp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = spnn.Conv3d(2, 4, 2, stride=2)
            self.up = spnn.Conv3d(4, 2, 2, stride=2, transposed=True)

        def forward(self, x: SparseTensor) -> SparseTensor:
            return self.up(self.down(x)) + x

    x = three_points()
    assert count_macs_by_layer(DownUp(), x) == {"down": 3 * 2 * 4, "up": 3 * 4 * 2}


def test_minkunet_macs_scale_with_width() -> None:
    """MACs of conv layers scale as cr^2 (channel products); the tiny classifier breaks exactness slightly."""
    coords = torch.cat([torch.zeros(300, 1), torch.randint(0, 16, (300, 3))], 1).int().unique(dim=0)
    x = SparseTensor(torch.randn(len(coords), 4), coords)
    a = count_macs(build_model("minkunet", 4, 4, cr=0.5), x)
    b = count_macs(build_model("minkunet", 4, 4, cr=0.25), x)
    assert 3.0 < a / b < 4.0
    assert a > 0 and b > 0


def test_stats_reject_bad_input() -> None:
    with pytest.raises(TypeError, match="SparseTensor"):
        count_macs(tiny_net(), torch.randn(3, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        count_parameters("model")
