"""KITTI-style average precision (40 recall points) with rotated BEV / 3D IoU.

Simplifications against the official KITTI devkit: no difficulty levels, no
DontCare regions and no minimum box height; every ground-truth box of a class
counts. Matching is greedy by decreasing score: a detection is a true positive
when its best-overlapping still-unmatched ground truth of the same class has
IoU >= the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .iou import box_iou

# (class name, IoU threshold) pairs of KITTI's benchmark plus the lenient car 0.5.
KITTI_THRESHOLDS: dict[str, tuple[float, ...]] = {"car": (0.7, 0.5), "pedestrian": (0.5,), "cyclist": (0.5,)}


def match_detections(dets: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float, mode: str = "bev") -> np.ndarray:
    """True-positive flags of one scene's detections of one class.

    Args:
        dets: [K, >=8] (x, y, z, l, w, h, yaw, score, ...).
        gt_boxes: [M, >=7] ground truth of the same class.
        iou_threshold: minimum IoU of a match.
        mode: ``"bev"`` or ``"3d"``.

    Returns:
        [K] bool array in the order of ``dets``.
    """
    k = dets.shape[0]
    tp = np.zeros(k, dtype=bool)
    if k == 0 or gt_boxes.shape[0] == 0:
        return tp
    iou = box_iou(dets[:, :7], gt_boxes[:, :7], mode).cpu().numpy()
    taken = np.zeros(gt_boxes.shape[0], dtype=bool)
    for i in np.argsort(-dets[:, 7].cpu().numpy(), kind="stable"):
        cand = np.where(taken, -1.0, iou[i])
        j = int(cand.argmax())
        if cand[j] >= iou_threshold:
            taken[j] = True
            tp[i] = True
    return tp


def ap_from_flags(scores: np.ndarray, tp: np.ndarray, n_gt: int, recall_points: int = 40) -> float:
    """Interpolated AP: mean over recall r in {1/R, ..., 1} of the best precision at recall >= r.

    Args:
        scores: [K] detection scores; tp: [K] true-positive flags; n_gt: ground-truth count.
        recall_points: R (40 for KITTI's AP_R40, 11 for the old AP_R11 which also includes r=0).

    Returns:
        AP in [0, 1]; NaN when ``n_gt == 0``.
    """
    if n_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, dtype=np.float64)[order]
    ctp = np.cumsum(hits)
    precision = ctp / np.arange(1, len(hits) + 1)
    recall = ctp / n_gt
    grid = np.linspace(0.0, 1.0, 11) if recall_points == 11 else np.arange(1, recall_points + 1) / recall_points
    total = 0.0
    for r in grid:
        ok = recall >= r - 1e-12
        total += float(precision[ok].max()) if ok.any() else 0.0
    return total / len(grid)


def average_precision(
    detections: Sequence[torch.Tensor],
    ground_truth: Sequence[tuple[torch.Tensor, torch.Tensor]],
    class_id: int,
    iou_threshold: float,
    mode: str = "bev",
    recall_points: int = 40,
) -> dict[str, float]:
    """AP of one class over a set of scenes.

    Args:
        detections: per scene [K, 9] (x, y, z, l, w, h, yaw, score, class).
        ground_truth: per scene (boxes [M, 7], labels [M]).
        class_id, iou_threshold, mode, recall_points: see :func:`ap_from_flags`.

    Returns:
        {"ap", "n_gt", "n_det", "max_recall"}.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection lists but {len(ground_truth)} ground-truth scenes")
    scores, flags, n_gt = [], [], 0
    for dets, (boxes, labels) in zip(detections, ground_truth):
        d = dets[dets[:, 8] == class_id] if dets.shape[0] else dets.reshape(0, 9)
        g = torch.as_tensor(boxes).reshape(-1, 7)[torch.as_tensor(labels).reshape(-1) == class_id]
        n_gt += g.shape[0]
        flags.append(match_detections(d, g, iou_threshold, mode))
        scores.append(d[:, 7].cpu().numpy())
    s = np.concatenate(scores) if scores else np.zeros(0)
    f = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
    ap = ap_from_flags(s, f, n_gt, recall_points)
    max_recall = float(f.sum() / n_gt) if n_gt else float("nan")
    return {"ap": ap, "n_gt": n_gt, "n_det": int(len(s)), "max_recall": max_recall}


def evaluate(
    detections: Sequence[torch.Tensor],
    ground_truth: Sequence[tuple[torch.Tensor, torch.Tensor]],
    classes: Sequence[str],
    thresholds: dict[str, tuple[float, ...]] | None = None,
) -> dict[str, dict[str, float]]:
    """BEV and 3D AP_R40 per class at KITTI's thresholds (car 0.7 and 0.5, others 0.5).

    Returns:
        {class: {"bev@0.7": ap, "3d@0.7": ap, ..., "n_gt": count}}; NaN APs
        where a class has no ground truth.
    """
    thresholds = KITTI_THRESHOLDS if thresholds is None else thresholds
    out: dict[str, dict[str, float]] = {}
    for c, name in enumerate(classes):
        res: dict[str, float] = {}
        for thr in thresholds.get(name, (0.5,)):
            for mode in ("bev", "3d"):
                r = average_precision(detections, ground_truth, c, thr, mode)
                res[f"{mode}@{thr}"] = r["ap"]
                res["n_gt"] = r["n_gt"]
        out[name] = res
    return out
