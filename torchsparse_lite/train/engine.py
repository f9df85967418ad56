"""One training epoch, evaluation and per-point prediction of a segmentation network."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..tensor import SparseTensor
from .distributed import DistContext, all_reduce_sum
from .metrics import confusion_matrix


def fresh_input(x: SparseTensor, device: torch.device) -> SparseTensor:
    """The batch input on ``device`` with a new, empty kernel-map cache."""
    feats, coords = x.feats.to(device, non_blocking=True), x.coords.to(device, non_blocking=True)
    return SparseTensor(feats, coords, x.stride, validate=False)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ctx: DistContext,
    *,
    desc: str = "train",
    progress: bool = True,
) -> list[float]:
    """Run one pass over ``loader``; returns this rank's loss of every step.

    Each batch is a ``collate_segmentation`` dict (``input`` SparseTensor,
    ``labels`` [M] int64). The loss is ``criterion(logits [M, C], labels)``.
    """
    model.train()
    losses: list[float] = []
    bar = tqdm(loader, desc=desc, disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
    for batch in bar:
        x = fresh_input(batch["input"], ctx.device)
        labels = batch["labels"].to(ctx.device, non_blocking=True)
        logits = model(x)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return losses


def point_predictions(logits: torch.Tensor, batch: dict[str, Any]) -> list[torch.Tensor]:
    """Per-point class predictions of every sample: ``argmax(logits)[offsets[i]:offsets[i+1]][inverse[i]]``.

    Args:
        logits: [M, C] voxel logits of the whole batch.
        batch: ``collate_segmentation`` dict (``offsets`` [B+1], ``inverse`` list of [N_i]).

    Returns:
        list of [N_i] int64 CPU tensors.
    """
    pred = logits.argmax(1).cpu()
    off = batch["offsets"].tolist()
    return [pred[off[i] : off[i + 1]][inv] for i, inv in enumerate(batch["inverse"])]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    num_classes: int,
    ctx: DistContext,
    *,
    ignore_index: int = 255,
    desc: str = "eval",
    progress: bool = True,
    keep: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Score ``model`` on ``loader``, summed over ranks.

    Returns:
        point_cm: [C, C] int64 confusion matrix over points (through the inverse maps);
        voxel_cm: [C, C] int64 over voxels (majority-vote labels);
        kept: the first ``keep`` samples of this rank as dicts with ``index``,
        ``pred`` [N] and ``labels`` [N] (for figures).
    """
    model.eval()
    point_cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    voxel_cm = torch.zeros_like(point_cm)
    kept: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc=desc, disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True):
        logits = model(fresh_input(batch["input"], ctx.device))
        voxel_cm += confusion_matrix(logits.argmax(1), batch["labels"], num_classes, ignore_index)
        preds = point_predictions(logits, batch)
        for i, (pred, lab) in enumerate(zip(preds, batch["point_labels"])):
            point_cm += confusion_matrix(pred, lab, num_classes, ignore_index)
            if len(kept) < keep:
                kept.append({"index": batch["index"][i], "pred": pred, "labels": lab})
    return all_reduce_sum(point_cm, ctx), all_reduce_sum(voxel_cm, ctx), kept
