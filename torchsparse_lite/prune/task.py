"""The segmentation task pruning is measured on: batches, loss, voxel mIoU, a short fine-tune loop.

Self-contained (it only needs :mod:`torchsparse_lite.datasets.segmentation`) so
pruning can be evaluated and fine-tuned with or without the training package.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..tensor import SparseTensor

Batch = tuple[SparseTensor, torch.Tensor]
IGNORE = 255


def segmentation_batches(
    num_scans: int,
    seed: int = 0,
    batch_size: int = 1,
    voxel_size: float = 0.2,
    max_points: int | None = None,
    kitti: str | None = None,
) -> list[Batch]:
    """Voxelised scans as ``(SparseTensor [M, 4], voxel labels [M])`` pairs, ``batch_size`` scans each.

    Args:
        num_scans: synthetic scans (seeds ``seed .. seed + num_scans - 1``).
        kitti: path of a SemanticKITTI ``.bin`` (its ``.label`` beside it): use that one scan instead.
    """
    from ..datasets.segmentation import SegmentationDataset, collate_segmentation  # noqa: PLC0415

    if kitti is not None:
        bin_path = str(kitti)
        label = bin_path[: -len(".bin")] + ".label"
        ds = SegmentationDataset.semantickitti([(bin_path, label)], voxel_size=voxel_size, max_points=max_points)
    else:
        ds = SegmentationDataset.synthetic(num_scans, seed=seed, voxel_size=voxel_size, max_points=max_points)
    out = []
    for start in range(0, len(ds), batch_size):
        b = collate_segmentation([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        out.append((b["input"], b["labels"]))
    return out


def num_classes_of(kitti: bool) -> int:
    """Classes of the synthetic outdoor set or of SemanticKITTI."""
    from ..datasets.segmentation import OUTDOOR_CLASSES, SEMANTICKITTI_CLASSES  # noqa: PLC0415

    return len(SEMANTICKITTI_CLASSES if kitti else OUTDOOR_CLASSES)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over voxels, label 255 ignored."""
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def confusion(model: nn.Module, batches: Sequence[Batch], num_classes: int) -> torch.Tensor:
    """[C, C] confusion matrix (rows = truth) of voxel predictions, eval mode, no gradients."""
    was = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    try:
        with torch.no_grad():
            for x, y in batches:
                pred = model(x).argmax(1).cpu()
                y = y.cpu()
                keep = y != IGNORE
                conf += torch.bincount(y[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(
                    num_classes, num_classes
                )
    finally:
        model.train(was)
    return conf


def miou(model: nn.Module, batches: Sequence[Batch], num_classes: int) -> float:
    """Mean IoU in percent over the classes present in the labels or predictions."""
    conf = confusion(model, batches, num_classes).double()
    tp = conf.diag()
    denom = conf.sum(0) + conf.sum(1) - tp
    present = denom > 0
    return float((tp[present] / denom[present]).mean() * 100) if bool(present.any()) else 0.0


def finetune(
    model: nn.Module,
    batches: Sequence[Batch],
    steps: int,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    progress: bool = True,
    desc: str = "fine-tune",
    extra_loss=None,
) -> list[float]:
    """``steps`` Adam steps cycling over ``batches`` (train mode, in place); returns the losses.

    Args:
        extra_loss: optional ``f(model) -> scalar`` added to the loss (e.g. :func:`~.importance.bn_l1_penalty`).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    losses = []
    it = itertools.cycle(batches)
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        x, y = next(it)
        loss = segmentation_loss(model(x), y)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
