"""Non-maximum suppression of rotated boxes: BEV rotated-IoU NMS and CenterPoint's circle NMS."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .iou import bev_iou


def _greedy(suppress: torch.Tensor) -> torch.Tensor:
    """Greedy keep mask over boxes already sorted by score; suppress [N, N] bool."""
    n = suppress.shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    sup = suppress.cpu()
    for i in range(n):
        if keep[i]:
            later = sup[i].clone()
            later[: i + 1] = False
            keep &= ~later
    return keep


def _nms(
    boxes: torch.Tensor, scores: torch.Tensor, suppress: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Rank by score, let ``suppress(order)`` ([N, N] bool over the ranked boxes) decide, keep greedily."""
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"boxes has {boxes.shape[0]} rows but scores has {scores.shape[0]}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = scores.argsort(descending=True)
    keep = _greedy(suppress(order))
    return order[keep.to(order.device)]


def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with rotated BEV IoU.

    Args:
        boxes: [N, >=7] (x, y, z, l, w, h, yaw).
        scores: [N].
        iou_threshold: a box is dropped when its BEV IoU with a kept, higher-scoring box exceeds this.

    Returns:
        [K] int64 indices of the kept boxes, by decreasing score.
    """
    return _nms(boxes, scores, lambda order: bev_iou(boxes[order], boxes[order]) > iou_threshold)


def circle_nms(boxes: torch.Tensor, scores: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """CenterPoint's circle NMS: drop a box whose centre lies within ``radius`` (m) of a kept, better one.

    Args:
        boxes: [N, >=2] (x, y, ...); scores: [N].
        radius: one distance, or [N] distances (e.g. by class), in metres.

    Returns:
        [K] int64 indices of the kept boxes, by decreasing score.
    """

    def within_radius(order: torch.Tensor) -> torch.Tensor:
        xy = boxes[order, :2].to(torch.float64)
        r = torch.as_tensor(radius, dtype=torch.float64, device=boxes.device)
        r = r[order] if r.dim() else r.expand(xy.shape[0])
        return torch.cdist(xy, xy) < r[:, None]

    return _nms(boxes, scores, within_radius)
