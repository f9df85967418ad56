"""ToBEV, Gaussian heatmap targets, box encoding and decoding of ideal head outputs."""

from __future__ import annotations

import math

import pytest
import torch

from torchsparse_lite import SparseTensor
from torchsparse_lite.detection.config import DetectorConfig, strided_size
from torchsparse_lite.detection.decode import decode
from torchsparse_lite.detection.losses import focal_loss, regression_loss
from torchsparse_lite.detection.metrics import evaluate
from torchsparse_lite.detection.targets import (
    build_targets,
    decode_codes,
    draw_gaussian,
    encode_boxes,
    gaussian_radius,
    world_to_cell,
)
from torchsparse_lite.nn.bev import ToBEV, to_bev

CFG = DetectorConfig(point_range=(-12.8, -12.8, -3.0, 12.8, 12.8, 1.0), voxel_size=(0.2, 0.2, 0.2))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels", [1, 4])
def test_to_bev_matches_dense(batch, channels):
    size = (7, 5, 3)
    g = torch.Generator().manual_seed(batch * 10 + channels)
    cols = [torch.randint(0, batch, (60,), generator=g)] + [torch.randint(0, s, (60,), generator=g) for s in size]
    coords = torch.unique(torch.stack(cols, 1), dim=0).to(torch.int32)
    x = SparseTensor(torch.randn(coords.shape[0], channels), coords)
    dense = x.dense(size)  # [B, C, X, Y, Z]
    b = dense.shape[0]
    expected = dense.permute(0, 1, 4, 2, 3).reshape(b, channels * size[2], size[0], size[1])
    got = ToBEV(size)(x)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
    assert to_bev(x, size, batch_size=b + 2).shape[0] == b + 2  # trailing empty samples


def test_to_bev_errors():
    x = SparseTensor(torch.ones(1, 2), torch.tensor([[0, 3, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError, match="outside spatial_range"):
        to_bev(x, (3, 1, 1))
    with pytest.raises(ValueError, match="3 positive ints"):
        ToBEV((3, 1))


def test_strided_size_covers_backbone_outputs():
    assert strided_size(384, 3) == 49 and strided_size(7, 1) == 4
    assert CFG.feature_size == (strided_size(128, 3), strided_size(128, 3))


def test_gaussian_radius_and_draw():
    r = gaussian_radius(2.75, 1.1, 0.1)
    assert 0 < r < 3  # CenterNet rule, CenterPoint's variant
    assert gaussian_radius(10, 10, 0.7) < gaussian_radius(10, 10, 0.1)
    heat = torch.zeros(9, 9)
    draw_gaussian(heat, (4, 4), 2)
    assert heat[4, 4] == 1.0 and heat.max() == 1.0
    assert torch.allclose(heat, heat.T) and torch.allclose(heat, heat.flip(0))
    assert heat[4, 7] == 0 and heat[4, 6] > 0
    sigma = 5 / 6
    assert heat[4, 5].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-5)
    edge = torch.zeros(5, 5)
    draw_gaussian(edge, (0, 4), 2)  # clipped at the border
    assert edge[0, 4] == 1.0 and edge[2, 2] > 0


def _scene():
    boxes = torch.tensor(
        [
            [3.3, -2.1, -0.9, 4.1, 1.8, 1.5, 0.4],
            [-7.0, 6.2, -1.0, 3.9, 1.7, 1.6, -2.9],
            [5.5, 8.1, -0.8, 0.7, 0.6, 1.8, 1.2],
            [-4.4, -9.3, -0.9, 1.8, 0.6, 1.7, 3.0],
        ]
    )
    return boxes, torch.tensor([0, 0, 1, 2])


def test_encode_decode_roundtrip():
    boxes, _ = _scene()
    cells = torch.round(world_to_cell(boxes[:, :2], CFG)).long()
    codes = encode_boxes(boxes, cells, CFG)
    assert bool((codes[:, :2].abs() <= 0.5 + 1e-6).all())
    back = decode_codes(codes, cells, CFG)
    assert torch.allclose(back[:, :6], boxes[:, :6], atol=1e-5)
    assert torch.allclose(torch.cos(back[:, 6] - boxes[:, 6]), torch.ones(4), atol=1e-6)


def test_targets_and_ideal_outputs_decode_to_ground_truth():
    boxes, labels = _scene()
    targets = build_targets(boxes, labels, CFG)
    assert len(targets) == 2
    assert targets[0]["mask"].sum() == 2 and targets[1]["mask"].sum() == 2
    assert targets[0]["heatmap"].shape == (1, *CFG.feature_size)
    assert (targets[1]["heatmap"] == 1).sum() == 2
    # Ideal head outputs: heatmap logits of the targets, codes written at the object cells.
    outputs = []
    for t in targets:
        heat = t["heatmap"][None].clamp(1e-6, 1 - 1e-6)
        maps = torch.zeros(1, 10, *CFG.feature_size)
        flat = maps.view(1, 10, -1)
        for k in torch.nonzero(t["mask"]).flatten():
            flat[0, :, t["index"][k]] = t["code"][k]
        outputs.append(
            {
                "heatmap": torch.log(heat / (1 - heat)),
                "reg": maps[:, 0:2],
                "z": maps[:, 2:3],
                "dim": maps[:, 3:6],
                "rot": maps[:, 6:8],
                "rot2": maps[:, 8:10],
            }
        )
        hm_loss = focal_loss(outputs[-1]["heatmap"], t["heatmap"][None])
        assert hm_loss.item() < 0.1 * focal_loss(torch.zeros_like(heat), t["heatmap"][None]).item()
        assert regression_loss(maps, t["index"][None], t["mask"][None], t["code"][None], torch.ones(10)).item() < 1e-6
    dets = decode(outputs, CFG)[0]
    assert dets.shape[0] == 4
    order = torch.argsort(dets[:, 0])
    ref = torch.argsort(boxes[:, 0])
    assert torch.allclose(dets[order, :6], boxes[ref, :6], atol=1e-4)
    assert torch.equal(dets[order, 8].long(), labels[ref])
    ap = evaluate([dets], [(boxes, labels)], CFG.classes)
    assert ap["car"]["3d@0.7"] == pytest.approx(1.0) and ap["cyclist"]["bev@0.5"] == pytest.approx(1.0)


def test_focal_loss_penalises_wrong_peaks():
    target = torch.zeros(1, 1, 5, 5)
    target[0, 0, 2, 2] = 1.0
    good = torch.full_like(target, -8.0)
    good[0, 0, 2, 2] = 8.0
    assert focal_loss(good, target).item() < 1e-3
    assert focal_loss(-good, target).item() > 5.0
    with pytest.raises(ValueError, match="same shape"):
        focal_loss(good, target[0])


@pytest.mark.parametrize("yaw", [-3.0, -1.2, 0.0, 0.4, 1.5707, 2.9])
def test_yaw_axis_from_double_angle(yaw):
    box = torch.tensor([[1.0, 2.0, -1.0, 4.0, 1.8, 1.5, yaw]])
    cells = torch.round(world_to_cell(box[:, :2], CFG)).long()
    codes = encode_boxes(box, cells, CFG)
    back = decode_codes(codes, cells, CFG)[0, 6].item()
    assert math.cos(back - yaw) == pytest.approx(1.0, abs=1e-6)
    # A heading head that cannot tell front from back (tiny sin/cos) still gives the right axis.
    codes[:, 6:8] *= 0.01
    axis = decode_codes(codes, cells, CFG)[0, 6].item()
    assert abs(math.cos(axis - yaw)) == pytest.approx(1.0, abs=1e-6)
    codes[:, 6:8] *= -1.0  # the opposite direction flips the box by pi
    assert math.cos(decode_codes(codes, cells, CFG)[0, 6].item() - yaw) == pytest.approx(-1.0, abs=1e-6)
