"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, accuracy.

Convention: ``cm[t, p]`` counts points of true class ``t`` predicted as ``p``.
IoU of class ``c`` = ``cm[c, c] / (row_c + col_c - cm[c, c])``; a class that
is neither present nor predicted has IoU NaN and is left out of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """Confusion matrix of integer predictions against targets.

    Args:
        pred: [N] int predictions in ``[0, num_classes)``.
        target: [N] int labels; ``ignore_index`` entries are skipped.
        num_classes: C.
        ignore_index: label to skip (None: none).

    Returns:
        [C, C] int64 on the CPU, rows = true class, columns = predicted class.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {list(pred.shape)} and target {list(target.shape)} must have the same shape")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = pred.reshape(-1).long().cpu()
    target = target.reshape(-1).long().cpu()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if target.numel():
        if int(target.min()) < 0 or int(target.max()) >= num_classes:
            raise ValueError(f"target labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}")
        if int(pred.min()) < 0 or int(pred.max()) >= num_classes:
            raise ValueError(f"predictions must lie in [0, {num_classes})")
    flat = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """[C] float64 IoU per class; NaN where the class is neither present nor predicted."""
    cm = cm.to(torch.float64)
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(cm: torch.Tensor) -> float:
    """Mean of the defined per-class IoUs (NaN when none is defined)."""
    iou = iou_per_class(cm)
    valid = ~torch.isnan(iou)
    return float(iou[valid].mean()) if bool(valid.any()) else float("nan")


def accuracy(cm: torch.Tensor) -> float:
    """Fraction of counted points predicted correctly (NaN for an empty matrix)."""
    total = int(cm.sum())
    return float(cm.diagonal().sum()) / total if total else float("nan")


def chance_miou(train_counts: torch.Tensor, cm: torch.Tensor) -> float:
    """Expected mIoU of a predictor that draws labels at random with the training class frequencies.

    With true frequencies ``p`` (from ``cm``) and predicted frequencies ``q``,
    the expected IoU of class c on many points is ``p q / (p + q - p q)``.
    """
    q = train_counts.to(torch.float64) / train_counts.sum().clamp(min=1)
    p = cm.sum(1).to(torch.float64) / cm.sum().clamp(min=1)
    union = p + q - p * q
    iou = torch.where(union > 0, p * q / union.clamp(min=1e-300), torch.full_like(p, float("nan")))
    valid = ~torch.isnan(iou)
    return float(iou[valid].mean()) if bool(valid.any()) else float("nan")


def summarize(cm: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """JSON-ready summary: ``accuracy``, ``miou``, ``iou`` {class: value or None}, ``points``."""
    iou = iou_per_class(cm)
    names = list(class_names) if class_names is not None else [str(i) for i in range(cm.shape[0])]
    if len(names) != cm.shape[0]:
        raise ValueError(f"class_names has {len(names)} entries but the matrix has {cm.shape[0]} classes")
    return {
        "accuracy": accuracy(cm),
        "miou": mean_iou(cm),
        "iou": {n: (None if v != v else float(v)) for n, v in zip(names, iou.tolist())},
        "points": int(cm.sum()),
    }
