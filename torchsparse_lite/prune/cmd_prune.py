"""``python -m torchsparse_lite prune``: prune a segmentation checkpoint and report size, speed and accuracy.

Example::

    python -m torchsparse_lite prune --checkpoint runs/demo/model.pt --config prune.json --out runs/prune

The config JSON holds any :class:`~.config.PruneConfig` key (criterion, ratio,
mode, ignore, schedule, finetune_steps, sensitivity, max_drop, nm, ...) plus an
optional ``"data"`` dict (train_scans, val_scans, val_seed, voxel_size,
max_points, batch_size). ``--checkpoint`` is any segmentation checkpoint
(``model.pt``, ``checkpoint_last.pt``, an earlier ``pruned.pt``); without it,
``--train-steps N`` trains a fresh model briefly first (a demo). Writes
``report.json``, ``report.png`` (+ ``sensitivity.png``) and ``pruned.pt``: a
checkpoint of :mod:`torchsparse_lite.train.checkpoint`'s format (structure of
the pruned network, the source's data settings and progress) that ``eval``,
``predict``, ``train --resume`` and ``prune`` read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from ..train.checkpoint import load_model

DATA_DEFAULTS = {"train_scans": 8, "val_scans": 4, "val_seed": 1000, "voxel_size": 0.2, "max_points": None,
                 "batch_size": 1}  # fmt: skip
Source = tuple[nn.Module, dict]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the prune command."""
    parser.add_argument("--checkpoint", help="segmentation checkpoint (train's model.pt, or an earlier pruned.pt)")
    parser.add_argument("--config", help="JSON file of pruning options (see torchsparse_lite.prune.config)")
    parser.add_argument("--out", default="runs/prune", help="output folder for report.json / report.png")
    parser.add_argument("--model", default="minkunet", help="model name when training from scratch")
    parser.add_argument("--cr", type=float, default=0.5, help="width multiplier when training from scratch")
    parser.add_argument("--train-steps", type=int, default=0, help="train a fresh model this long (no checkpoint)")
    parser.add_argument("--kitti", help="SemanticKITTI .bin scan also timed for latency")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide tqdm bars")


def data_options(raw: dict, saved: dict | None = None) -> dict:
    """The config's ``"data"`` dict over :data:`DATA_DEFAULTS`; the checkpoint's voxel size unless the config sets one.

    Args:
        raw: the config JSON.
        saved: the source checkpoint's ``data`` settings (None without a checkpoint).
    """
    given = raw.get("data", {})
    if not isinstance(given, dict):
        raise TypeError(f"config data must be a JSON object, got {given!r}")
    data = {**DATA_DEFAULTS, **given}
    unknown = sorted(set(data) - set(DATA_DEFAULTS))
    if unknown:
        raise ValueError(f"config data: unknown key(s) {unknown}; valid: {sorted(DATA_DEFAULTS)}")
    if saved and "voxel_size" in saved and "voxel_size" not in given:  # evaluate at the training voxel size
        data["voxel_size"] = float(saved["voxel_size"])
    return data


def pruned_fields(args: argparse.Namespace, source: Source | None, data: dict) -> dict:
    """What ``pruned.pt`` records beside the network: data settings and progress of the source checkpoint.

    A source without data settings (an old pruned file) or no source at all gets
    those of the synthetic scans the run pruned on, so ``eval`` finds them.
    """
    ckpt = source[1] if source is not None else {}
    saved = ckpt.get("data", {})
    settings = {**saved, "voxel_size": data["voxel_size"]} if "class_names" in saved else _synthetic(args, data)
    return {"data": settings, "epoch": int(ckpt.get("epoch", 0)), "step": int(ckpt.get("step", 0)),
            "pruned_from": str(args.checkpoint) if args.checkpoint else None}  # fmt: skip


def _synthetic(args: argparse.Namespace, data: dict) -> dict:
    """Data settings of the run's synthetic scans (full sensor, as :func:`~.task.segmentation_batches` makes)."""
    from ..datasets.segmentation import OUTDOOR_CLASSES, SegmentationDataset  # noqa: PLC0415

    source = {"kind": "synthetic", "train_seed": args.seed, "train_scans": data["train_scans"],
              "val_seed": data["val_seed"], "val_scans": data["val_scans"], "full_scans": True}  # fmt: skip
    return {"voxel_size": data["voxel_size"], "class_names": list(OUTDOOR_CLASSES),
            "in_channels": SegmentationDataset.in_channels, "ignore_index": SegmentationDataset.ignore_index,
            "source": source}  # fmt: skip


def _model(args: argparse.Namespace, source: Source | None, train: list, num_classes: int, progress: bool) -> nn.Module:
    """The checkpoint's model, or a fresh one trained ``--train-steps`` on ``train``."""
    from .. import models  # noqa: PLC0415
    from .task import finetune  # noqa: PLC0415

    if source is not None:
        model = source[0]
        if getattr(model, "num_classes", num_classes) != num_classes:
            raise ValueError(
                f"--checkpoint has {model.num_classes} classes but the synthetic evaluation data has {num_classes}; "
                "prune a model trained on the synthetic scans"
            )
        return model
    if args.train_steps > 0:
        model = models.build_model(args.model, 4, num_classes, args.cr)
        finetune(model, train, args.train_steps, lr=0.01, progress=progress, desc="train")
        return model
    raise ValueError("give --checkpoint PATH, or --train-steps N to train a fresh model first")


def run(args: argparse.Namespace) -> int:
    """Prune as the config says; prints the before/after summary; returns 0."""
    from .config import PruneConfig  # noqa: PLC0415
    from .pipeline import run_pipeline  # noqa: PLC0415
    from .task import num_classes_of, segmentation_batches  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    raw = json.loads(Path(args.config).read_text()) if args.config else {}
    cfg = PruneConfig.from_dict(raw)
    source = load_model(args.checkpoint, task="segmentation") if args.checkpoint else None
    data = data_options(raw, source[1]["data"] if source is not None else None)
    progress = not args.no_progress
    kw = {"voxel_size": data["voxel_size"], "max_points": data["max_points"], "batch_size": data["batch_size"]}
    train = segmentation_batches(data["train_scans"], seed=args.seed, **kw)
    val = segmentation_batches(data["val_scans"], seed=data["val_seed"], **kw)
    num_classes = num_classes_of(kitti=False)
    model = _model(args, source, train, num_classes, progress)
    latency_inputs = {"val": val[0][0]}
    if args.kitti:
        latency_inputs["kitti"] = segmentation_batches(1, voxel_size=data["voxel_size"], kitti=args.kitti)[0][0]
    report = run_pipeline(model, cfg, train, val, num_classes, args.out, latency_inputs, progress,
                          checkpoint_fields=pruned_fields(args, source, data))
    b, a = report["before"], report["after"]
    print(
        f"params {b['parameters']} -> {a['parameters']}, MACs {b['macs']} -> {a['macs']}, "
        f"CPU latency ratio {report['latency_ratio']}, mIoU {b['metric']:.2f} -> {a['metric']:.2f}; "
        f"report in {Path(args.out) / 'report.json'}"
    )
    return 0
