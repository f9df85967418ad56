"""The segmentation task pruning is measured on: batches, loss, voxel mIoU, fine-tuning, training to a plateau.

Self-contained (it only needs :mod:`torchsparse_lite.datasets.segmentation`) so
pruning can be evaluated and fine-tuned with or without the training package.
"""

from __future__ import annotations

import copy
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


def train_to_plateau(
    model: nn.Module,
    train: Sequence[Batch],
    val: Sequence[Batch],
    num_classes: int,
    *,
    lr: float = 4e-3,
    round_steps: int = 60,
    max_rounds: int = 12,
    plateau: float = 1.0,
    patience: int = 2,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` (in place) in Adam rounds until its held-out mIoU stops improving, then settle.

    After each round of ``round_steps`` steps the held-out mIoU is measured; a round *stalls* when it is
    less than ``plateau`` points above the best so far. After ``patience`` stalls in a row (or
    ``max_rounds`` rounds) one last round runs at a tenth of ``lr`` and training stops.

    Returns:
        One record per round: ``round``, ``step``, ``miou``, ``loss``, ``settle`` (the low-rate round);
        the last one also has ``plateaued``: whether the stall rule (not the round cap) ended training.
    """
    if min(round_steps, max_rounds, patience) < 1:
        raise ValueError(f"round_steps, max_rounds and patience must be >= 1, got {round_steps}, {max_rounds}, "
                         f"{patience}")  # fmt: skip
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    history: list[dict] = []
    stalls, best, it = 0, -float("inf"), itertools.cycle(train)
    for rnd in range(max_rounds + 1):
        settle = rnd == max_rounds or stalls >= patience
        if settle:
            for g in opt.param_groups:
                g["lr"] = lr / 10
        model.train()
        for _ in tqdm(range(round_steps), desc=f"round {rnd}", disable=not progress, leave=False):
            x, y = next(it)
            loss = segmentation_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = miou(model, val, num_classes)
        stalls = stalls + 1 if score < best + plateau else 0
        best = max(best, score)
        history.append({"round": rnd, "step": (rnd + 1) * round_steps, "miou": score, "loss": float(loss.detach()),
                        "settle": settle})  # fmt: skip
        if settle:
            history[-1]["plateaued"] = rnd < max_rounds
            break
    model.eval()
    return history


def reinitialised(model: nn.Module, seed: int = 1) -> nn.Module:
    """A copy of ``model``'s architecture with fresh weights (every submodule's ``reset_parameters``, seeded).

    The "same pruned architecture trained from scratch" baseline starts from this.
    """
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters") and m is not fresh:
            m.reset_parameters()
    return fresh
