"""The training job behind ``python -m torchsparse_lite train`` (single process or DDP under torchrun)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..datasets.segmentation import SegmentationDataset
from ..models import build_model, count_macs, count_parameters
from ..tensor import SparseTensor
from .checkpoint import load_checkpoint, require_data, restore, rng_state, save_checkpoint, set_rng_state, unwrap
from .data import (
    VAL_SEED_OFFSET,
    class_counts,
    class_weights,
    eval_loader,
    folder_split,
    pregenerate,
    split_folder,
    synthetic_split,
    train_loader,
)
from .distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    average_buffers,
    barrier,
    init_distributed,
    shutdown,
)
from .engine import evaluate, fresh_input, train_one_epoch
from .figures import plot_class_iou, plot_loss_curve, plot_topdown
from .metrics import chance_miou, summarize


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (identical weights <=> identical digest)."""
    h = hashlib.sha256()
    for name, t in unwrap(model).state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def warmup_cosine(total_steps: int, warmup_frac: float = 0.05, floor: float = 0.01):
    """LR multiplier: linear warm-up from 0.1 over ``warmup_frac`` of the steps, then cosine down to ``floor``."""
    warm = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warm:
            return 0.1 + 0.9 * step / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def build_data(args: argparse.Namespace):
    """(train dataset, held-out dataset, data description) from the command's arguments."""
    if args.data == "synthetic":
        train = synthetic_split(args.train_scans, args.seed, args.voxel_size, augment=args.augment,
                                full_scans=args.full_scans)
        val = synthetic_split(args.val_scans, args.seed + VAL_SEED_OFFSET, args.voxel_size,
                              full_scans=args.full_scans)
        source = {"kind": "synthetic", "train_seed": args.seed, "val_seed": args.seed + VAL_SEED_OFFSET,
                  "train_scans": args.train_scans, "val_scans": args.val_scans, "full_scans": args.full_scans}
    else:
        if args.val_data:
            train = folder_split(args.data, args.voxel_size, augment=args.augment)
            val = folder_split(args.val_data, args.voxel_size)
        else:
            tr, va = split_folder(args.data, args.val_fraction)
            train = folder_split(args.data, args.voxel_size, augment=args.augment, select=tr)
            val = folder_split(args.data, args.voxel_size, select=va)
        source = {"kind": "semantickitti", "train": str(args.data), "val": str(args.val_data or args.data),
                  "train_scans": len(train), "val_scans": len(val)}
    if args.max_points:
        train.max_points = args.max_points
    data = {"voxel_size": args.voxel_size, "class_names": list(train.class_names), "in_channels": train.in_channels,
            "ignore_index": train.ignore_index, "source": source}
    return train, val, data


def _check_resume(ckpt: dict, model: nn.Module, data: dict, path: Path) -> None:
    if ckpt["model_config"] != unwrap(model).config():
        raise ValueError(f"--resume {path}: checkpoint model {ckpt['model_config']} differs from "
                         f"{unwrap(model).config()}; pass the same --model/--cr")
    for key in ("voxel_size", "class_names"):
        if ckpt["data"].get(key) != data[key]:
            raise ValueError(f"--resume {path}: checkpoint {key}={ckpt['data'].get(key)!r} differs from "
                             f"{data[key]!r}; pass the same data options")


def _epoch_line(epoch: int, epochs: int, loss: float, summary: dict | None) -> str:
    line = f"epoch {epoch}/{epochs}  loss {loss:.4f}"
    if summary is not None:
        per = "  ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in summary["iou"].items())
        line += f"  held-out mIoU {summary['miou']:.4f}  acc {summary['accuracy']:.4f}\n    IoU: {per}"
    return line


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume), evaluate on held-out scans, write checkpoint, report.json and figures.

    Stages: :func:`_setup` (data, model, optimizer, resumption), :func:`_run_epoch`
    per epoch (train, score every ``eval_every``, checkpoint), :func:`_finish`
    (report, ``model.pt``, figures).

    Returns the report dict (identical on every rank except ``rank``).
    """
    t_start = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    out = Path(args.out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        job = _setup(args, ctx, out, t_start)
        stop = args.epochs if args.stop_after is None else min(args.epochs, job.start_epoch + args.stop_after)
        scored = None
        epochs_bar = tqdm(range(job.start_epoch, stop), desc="epochs", disable=not job.progress, dynamic_ncols=True)
        for epoch in epochs_bar:
            scored = _run_epoch(job, epoch, stop) or scored
        if scored is None:  # nothing left to train (resumed a finished run): score the checkpoint
            scored = _score(job)
        return _finish(job, scored, t_start)
    finally:
        shutdown(ctx)


@dataclass
class _Job:
    """What the stages of one training run share."""

    args: argparse.Namespace
    ctx: DistContext
    out: Path
    progress: bool
    train_ds: SegmentationDataset
    val_ds: SegmentationDataset
    data: dict
    counts: torch.Tensor
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    scheduler: Any
    v_loader: Any = None
    history: dict[str, Any] = field(default_factory=lambda: {"step_loss": [], "epochs": []})
    start_epoch: int = 0
    step: int = 0
    timing: dict[str, float] = field(default_factory=lambda: {"data_s": 0.0, "train_s": 0.0, "eval_s": 0.0})


@dataclass
class _Scored:
    """Held-out scores: point and voxel confusion matrices, the point summary, kept predictions."""

    point_cm: torch.Tensor
    voxel_cm: torch.Tensor
    kept: list[dict]
    summary: dict


def _setup(args: argparse.Namespace, ctx: DistContext, out: Path, t_start: float) -> _Job:
    """Seeded data (generated once), model (+ ``--resume``'s weights and structure) + loss + optimizer + loaders."""
    progress = not args.no_progress and ctx.is_main
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_ds, val_ds, data = build_data(args)
    pregenerate(train_ds, "generating/loading training scans", progress)
    pregenerate(val_ds, "generating/loading held-out scans", progress, range(ctx.rank, len(val_ds), ctx.world_size))
    counts = class_counts(train_ds)
    t_data = time.perf_counter() - t_start
    model = build_model(args.model, train_ds.in_channels, train_ds.num_classes, cr=args.cr)
    ckpt = _resume_checkpoint(args, out, model, data) if args.resume else None
    model = model.to(ctx.device)
    weights = class_weights(counts, args.class_weights)
    criterion = nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(ctx.device), ignore_index=train_ds.ignore_index
    )
    if ctx.distributed:
        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loader = train_loader(train_ds, args.batch_size, args.seed, ctx, args.workers)
    # a weights-only checkpoint (model.pt, pruned.pt) carries no scheduler: the LR schedule resumes at its step
    offset = int(ckpt["step"]) if ckpt is not None and ckpt.get("scheduler") is None else 0
    factor = warmup_cosine(args.epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: factor(s + offset))
    job = _Job(args, ctx, out, progress, train_ds, val_ds, data, counts, model, criterion, optimizer, loader, scheduler)
    job.timing["data_s"] = t_data
    if ckpt is not None:
        _resume_state(job, ckpt)
    job.v_loader = eval_loader(val_ds, args.batch_size, ctx, args.workers)
    return job


def _resume_checkpoint(args: argparse.Namespace, out: Path, model: nn.Module, data: dict) -> dict:
    """The ``--resume`` checkpoint, checked against the run's options; ``model`` takes its structure and weights."""
    path = Path(out / "checkpoint_last.pt" if args.resume == "auto" else args.resume)
    ckpt = load_checkpoint(path, map_location="cpu", task="segmentation")
    require_data(ckpt, ("voxel_size", "class_names"), path)
    _check_resume(ckpt, model, data, path)
    restore(model, ckpt)
    return ckpt


def _resume_state(job: _Job, ckpt: dict) -> None:
    """Optimizer, schedule, progress, history and RNG states of a full checkpoint; progress alone of a weights-only one.

    A weights-only checkpoint (``model.pt``, a pruned ``pruned.pt``) resumes at its epoch and
    step with a fresh optimizer (a pruned network's moments would not fit anyway).
    """
    if ckpt.get("optimizer") is not None:
        job.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scheduler") is not None:
        job.scheduler.load_state_dict(ckpt["scheduler"])
    job.start_epoch, job.step = int(ckpt["epoch"]), int(ckpt.get("step", 0))
    if ckpt.get("history") is not None:
        job.history = ckpt["history"]
    if ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])


def _run_epoch(job: _Job, epoch: int, stop: int) -> _Scored | None:
    """Train one epoch, log it, score held-out scans when due, checkpoint; returns the scores when scored."""
    args, ctx = job.args, job.ctx
    job.loader.sampler.set_epoch(epoch)
    job.train_ds.set_epoch(epoch)
    t0 = time.perf_counter()
    losses = train_one_epoch(job.model, job.loader, job.optimizer, job.scheduler, job.criterion, ctx,
                             desc=f"epoch {epoch + 1}/{args.epochs}", progress=job.progress)
    average_buffers(job.model, ctx)
    job.timing["train_s"] += time.perf_counter() - t0
    job.step += len(losses)
    # mean loss of each step over ranks, so that every rank logs the same numbers
    step_loss = all_reduce_sum(torch.tensor(losses, dtype=torch.float64), ctx) / ctx.world_size
    job.history["step_loss"] += step_loss.tolist()
    record: dict[str, Any] = {"epoch": epoch + 1, "step": job.step, "loss": float(step_loss.mean()),
                              "lr": job.optimizer.param_groups[0]["lr"]}
    scored = None
    if epoch + 1 == stop or (epoch + 1) % args.eval_every == 0:
        t0 = time.perf_counter()
        scored = _score(job)
        job.timing["eval_s"] += time.perf_counter() - t0
        record.update(val_miou=scored.summary["miou"], val_accuracy=scored.summary["accuracy"],
                      val_iou=scored.summary["iou"],
                      val_voxel_miou=summarize(scored.voxel_cm, job.val_ds.class_names)["miou"])
    job.history["epochs"].append(record)
    if ctx.is_main:
        tqdm.write(_epoch_line(epoch + 1, args.epochs, record["loss"], scored.summary if scored else None))
        save_checkpoint(job.out / "checkpoint_last.pt", job.model, job.data, optimizer=job.optimizer.state_dict(),
                        scheduler=job.scheduler.state_dict(), epoch=epoch + 1, step=job.step, history=job.history,
                        rng=rng_state(), args=vars(args))
    barrier(ctx)
    return scored


def _score(job: _Job) -> _Scored:
    """Held-out confusion matrices (points and voxels) of the current weights, one prediction kept for figures."""
    point_cm, voxel_cm, kept = evaluate(unwrap(job.model), job.v_loader, job.val_ds.num_classes, job.ctx,
                                        ignore_index=job.val_ds.ignore_index, progress=job.progress, keep=1)
    return _Scored(point_cm, voxel_cm, kept, summarize(point_cm, job.val_ds.class_names))


def _finish(job: _Job, scored: _Scored, t_start: float) -> dict[str, Any]:
    """The report (all ranks), then ``model.pt``, figures and report.json (main rank)."""
    digests = all_gather_objects(weights_digest(job.model), job.ctx)
    report = _report(job.args, job.ctx, job.model, job.val_ds, job.data, job.history, scored.summary,
                     scored.point_cm, job.counts, digests, job.timing, t_start)
    if job.ctx.is_main:
        save_checkpoint(job.out / "model.pt", job.model, job.data, epoch=report["epochs_done"],
                        step=report["steps_done"], heldout=report.get("heldout"))
        _write_outputs(job.out, report, job.history, scored.summary, scored.kept, job.val_ds, job.data)
    barrier(job.ctx)
    return report


def _report(
    args: argparse.Namespace,
    ctx: DistContext,
    model: nn.Module,
    val_ds: SegmentationDataset,
    data: dict,
    history: dict,
    summary: dict,
    point_cm: torch.Tensor,
    counts: torch.Tensor,
    digests: list[str],
    timing: dict[str, float],
    t_start: float,
) -> dict[str, Any]:
    """The JSON report: model size and MACs, data, history, held-out scores vs chance, DDP digests, timing."""
    net = unwrap(model)
    sample = val_ds[0]
    coords = torch.cat([torch.zeros_like(sample["coords"][:, :1]), sample["coords"]], 1)
    x = fresh_input(SparseTensor(sample["feats"], coords), ctx.device)
    report: dict[str, Any] = {
        "command": "train",
        "model": net.config(),
        "parameters": count_parameters(net),
        "macs_per_scan": count_macs(net, x),
        "macs_input_voxels": len(x),
        "data": data,
        "train_class_voxels": dict(zip(data["class_names"], counts.tolist())),
        "args": vars(args),
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "device": str(ctx.device),
        "threads": torch.get_num_threads(),
        "epochs_done": history["epochs"][-1]["epoch"] if history["epochs"] else 0,
        "steps_done": len(history["step_loss"]),
        "history": history["epochs"],
        "rank_weight_digests": digests,
        "ranks_identical": len(set(digests)) == 1,
    }
    if summary is not None:
        report["heldout"] = summary
        report["heldout"]["chance_miou"] = chance_miou(counts, point_cm)
        report["heldout"]["majority_class_miou"] = _majority_miou(counts, point_cm)
    report["timing"] = {**{k: round(v, 2) for k, v in timing.items()},
                        "total_s": round(time.perf_counter() - t_start, 2)}
    return report


def _majority_miou(counts: torch.Tensor, cm: torch.Tensor) -> float:
    """mIoU of always predicting the most frequent training class."""
    c = int(counts.argmax())
    fake = torch.zeros_like(cm)
    fake[:, c] = cm.sum(1)
    return summarize(fake)["miou"]


def _write_outputs(
    out: Path, report: dict, history: dict, summary: dict, kept: list[dict], val_ds: SegmentationDataset, data: dict
) -> None:
    """Figures (loss curve, per-class IoU, top-down render of a held-out scan) and report.json."""
    figures = {"loss_curve": str(plot_loss_curve(history, out / "loss_curve.png"))}
    if summary is not None:
        figures["class_iou"] = str(plot_class_iou(summary["iou"], out / "class_iou.png",
                                                  chance=report["heldout"]["chance_miou"],
                                                  title="per-class IoU on held-out points"))
    if kept:
        points, _ = val_ds.load_scan(kept[0]["index"])
        figures["prediction_topdown"] = str(plot_topdown(
            points, kept[0]["pred"].numpy(), data["class_names"], out / "prediction_topdown.png",
            labels=kept[0]["labels"].numpy(), ignore_index=data["ignore_index"],
            title=f"prediction (held-out scan {kept[0]['index']})"))
    report["figures"] = figures
    report["checkpoint"] = str(out / "checkpoint_last.pt")
    report["model_file"] = str(out / "model.pt")
    (out / "report.json").write_text(json.dumps(report, indent=2))
