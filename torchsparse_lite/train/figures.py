"""PNG figures of a segmentation run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


def class_colors(num_classes: int) -> np.ndarray:
    """[C, 4] RGBA colours, one per class (tab10 / tab20)."""
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return np.array([cmap(i % cmap.N) for i in range(num_classes)])


def plot_loss_curve(history: dict, path: str | Path) -> Path:
    """Training loss per step (raw and smoothed) and held-out mIoU per epoch on a second axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    loss = np.asarray(history.get("step_loss", []), dtype=float)
    if loss.size:
        steps = np.arange(1, loss.size + 1)
        ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=0.8, label="loss (step)")
        w = max(1, loss.size // 20)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], smooth, color="tab:blue", lw=2, label=f"loss ({w}-step mean)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss")
    epochs = history.get("epochs", [])
    pts = [(e["step"], e["val_miou"]) for e in epochs if e.get("val_miou") is not None]
    handles, labels = ax.get_legend_handles_labels()
    if pts:
        ax2 = ax.twinx()
        ax2.plot(*zip(*pts), "o-", color="tab:orange", label="held-out mIoU")
        ax2.set_ylabel("mIoU (held-out points)")
        ax2.set_ylim(0, 1)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right")
    ax.set_title("MinkUNet training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_class_iou(iou: dict[str, float | None], path: str | Path, *, chance: float | None = None,
                   title: str = "per-class IoU") -> Path:
    """Bars of per-class IoU (classes without points shown empty), mIoU and optional chance level as lines."""
    names = list(iou)
    vals = np.array([np.nan if v is None else v for v in iou.values()], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(names) + 2), 4))
    ax.bar(range(len(names)), np.nan_to_num(vals), color=class_colors(len(names)))
    for i, v in enumerate(vals):
        ax.text(i, (0 if np.isnan(v) else v) + 0.01, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", fontsize=8)
    if np.isfinite(vals).any():
        ax.axhline(np.nanmean(vals), color="k", ls="--", lw=1, label=f"mIoU {np.nanmean(vals):.3f}")
    if chance is not None and chance == chance:
        ax.axhline(chance, color="tab:red", ls=":", lw=1, label=f"chance {chance:.3f}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=40, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IoU")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_topdown(
    points: np.ndarray,
    pred: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    labels: np.ndarray | None = None,
    ignore_index: int = 255,
    title: str = "prediction",
    max_points: int = 60_000,
) -> Path:
    """Top-down (x, y) render of a scan coloured by predicted class, beside the ground truth when given.

    Args:
        points: [N, >=2] x, y (metres).
        pred: [N] predicted class ids.
        labels: [N] true class ids (``ignore_index`` drawn grey) or None.
    """
    pts = np.asarray(points)
    n = pts.shape[0]
    sel = np.arange(n) if n <= max_points else np.random.default_rng(0).choice(n, max_points, replace=False)
    colors = class_colors(len(class_names))
    panels = [("ground truth", labels), (title, pred)] if labels is not None else [(title, pred)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6.5), squeeze=False)
    for ax, (name, lab) in zip(axes[0], panels):
        lab = np.asarray(lab)[sel]
        rgba = np.where((lab == ignore_index)[:, None], np.array([0.7, 0.7, 0.7, 1.0]),
                        colors[np.clip(lab, 0, len(class_names) - 1)])
        ax.scatter(pts[sel, 0], pts[sel, 1], c=rgba, s=0.8, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
    present = np.unique(np.concatenate([np.asarray(p)[sel] for _, p in panels]))
    handles = [Patch(color=colors[c], label=class_names[c]) for c in present if 0 <= c < len(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7) or 1, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
