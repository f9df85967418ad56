"""Confusion matrix, per-class IoU, mIoU and accuracy against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from torchsparse_lite.train.metrics import (
    accuracy,
    chance_miou,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    summarize,
)


def test_hand_computed() -> None:
    target = torch.tensor([0, 0, 0, 1, 1, 2, 255, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 0])
    cm = confusion_matrix(pred, target, 4)
    expected = torch.tensor([[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm, expected)
    # IoU: class 0: 2 / (3 + 3 - 2) = 0.5; class 1: 1 / (2 + 2 - 1) = 1/3; class 2: 1 / (2 + 2 - 1) = 1/3; 3: NaN
    iou = iou_per_class(cm)
    assert iou[:3].tolist() == pytest.approx([0.5, 1 / 3, 1 / 3])
    assert math.isnan(float(iou[3]))
    assert mean_iou(cm) == pytest.approx((0.5 + 2 / 3) / 3)
    assert accuracy(cm) == pytest.approx(4 / 7)
    s = summarize(cm, ["a", "b", "c", "d"])
    assert s["iou"]["d"] is None and s["points"] == 7


def test_chance_miou_by_hand() -> None:
    # true frequencies p = (0.5, 0.5), predicted q = (0.5, 0.5): IoU = 0.25 / 0.75 = 1/3 for both
    cm = torch.tensor([[5, 5], [5, 5]])
    assert chance_miou(torch.tensor([10, 10]), cm) == pytest.approx(1 / 3)
    # a perfect predictor scores 1.
    assert mean_iou(torch.tensor([[3, 0], [0, 7]])) == 1.0


@pytest.mark.parametrize("ignore", [None, 255])
def test_random_matches_loop(ignore: int | None) -> None:
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 5, (500,), generator=g)
    p = torch.randint(0, 5, (500,), generator=g)
    cm = confusion_matrix(p, t, 5, ignore)
    loop = torch.zeros(5, 5, dtype=torch.int64)
    for a, b in zip(t.tolist(), p.tolist()):
        loop[a, b] += 1
    assert torch.equal(cm, loop)


def test_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="target labels"):
        confusion_matrix(torch.zeros(2), torch.tensor([0, 7]), 2)
    with pytest.raises(ValueError, match="class_names"):
        summarize(torch.zeros(2, 2, dtype=torch.int64), ["a"])
