"""Bird's-eye-view PNG of a scan with ground-truth and predicted boxes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .iou import bev_corners  # noqa: E402


def _draw_boxes(ax, boxes: np.ndarray, color: str, lw: float, labels: Sequence[str] | None = None) -> None:
    if len(boxes) == 0:
        return
    corners = bev_corners(torch.as_tensor(boxes[:, :7], dtype=torch.float64)).numpy()
    for i, c in enumerate(corners):
        poly = np.vstack([c, c[:1]])
        ax.plot(poly[:, 0], poly[:, 1], color=color, lw=lw)
        front = c[[0, 3]].mean(0)
        ax.plot([boxes[i, 0], front[0]], [boxes[i, 1], front[1]], color=color, lw=lw)
        if labels is not None:
            ax.text(c[0, 0], c[0, 1], labels[i], color=color, fontsize=6)


def save_bev_png(
    path: str | Path,
    points: np.ndarray,
    point_range: Sequence[float],
    gt_boxes: np.ndarray | None = None,
    detections: np.ndarray | None = None,
    classes: Sequence[str] = ("car", "pedestrian", "cyclist"),
    title: str = "",
    max_boxes: int = 50,
) -> Path:
    """Write a BEV figure: points (grey, by height), ground truth (green), detections (red, with scores).

    Args:
        path: output PNG.
        points: [N, >=3]; point_range: (x0, y0, z0, x1, y1, z1) shown.
        gt_boxes: [B, 7]; detections: [K, 9] (x, y, z, l, w, h, yaw, score, class).
        max_boxes: draw only the best-scoring detections.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x0, y0, _, x1, y1, _ = point_range
    pts = np.asarray(points)
    keep = (pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)
    pts = pts[keep]
    if len(pts) > 30000:
        pts = pts[np.random.default_rng(0).choice(len(pts), 30000, replace=False)]
    fig, ax = plt.subplots(figsize=(8, 8 * (y1 - y0) / max(x1 - x0, 1e-6) + 0.6))
    ax.scatter(pts[:, 0], pts[:, 1], s=0.2, c=pts[:, 2], cmap="Greys", vmin=-2.5, vmax=1.0)
    if gt_boxes is not None:
        _draw_boxes(ax, np.asarray(gt_boxes), "tab:green", 1.2)
    if detections is not None and len(detections):
        det = np.asarray(detections)
        det = det[np.argsort(-det[:, 7])][:max_boxes]
        text = [f"{classes[int(c)][:3]} {s:.2f}" for s, c in zip(det[:, 7], det[:, 8])]
        _draw_boxes(ax, det, "tab:red", 0.8, text)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(title + "  (green: ground truth, red: predicted)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_loss_png(path: str | Path, history: Sequence[dict]) -> Path:
    """Training loss per logged step (heatmap, regression, total) as a PNG."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    for key in ("total", "heatmap", "regression"):
        ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
