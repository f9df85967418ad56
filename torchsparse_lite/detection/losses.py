"""CenterPoint losses: penalty-reduced focal loss on heatmaps, masked L1 on regression codes."""

from __future__ import annotations

import torch


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet focal loss, normalised by the number of peaks (target == 1).

    Args:
        logits: [B, C, X, Y] heatmap logits.
        target: [B, C, X, Y] Gaussian targets in [0, 1], exactly 1 at object centres.

    Returns:
        scalar loss.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {list(logits.shape)} and target {list(target.shape)} must have the same shape")
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).to(pred.dtype)
    neg = 1.0 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** alpha * pos
    neg_loss = torch.log(1 - pred) * pred**alpha * (1 - target) ** beta * neg
    num_pos = pos.sum()
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos.clamp(min=1.0)


def gather_cells(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of maps [B, C, X, Y] at flat cell indices index [B, K] -> [B, K, C]."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return torch.gather(flat, 2, index[:, None, :].expand(-1, c, -1)).transpose(1, 2)


def regression_loss(
    pred_maps: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Masked, weighted L1 between predicted codes at object cells and their targets.

    Args:
        pred_maps: [B, D, X, Y]; index: [B, K] flat cells; mask: [B, K] bool;
        target: [B, K, D]; weights: [D] per-channel weights (D = 10 codes).

    Returns:
        scalar loss, summed over channels and divided by the number of objects.
    """
    pred = gather_cells(pred_maps, index)
    m = mask[..., None].to(pred.dtype)
    err = (pred - target).abs() * m * weights.to(pred.dtype)
    return err.sum() / m.sum().clamp(min=1.0)
