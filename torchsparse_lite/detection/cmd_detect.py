"""``python -m torchsparse_lite detect train|eval|predict``: CenterPoint-style 3D detection.

* ``train``: trains on held-in scenes (synthetic by default), evaluates on
  held-out ones, writes ``checkpoint.pt``, ``report.json``, ``bev.png`` and
  ``loss.png`` under ``--out``; ``--resume`` continues from the checkpoint.
* ``eval``: AP of a checkpoint on held-out scenes -> ``eval.json`` + ``bev.png``.
* ``predict``: boxes of one ``.bin`` scan -> ``predictions.json`` + ``bev.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..train.checkpoint import load_checkpoint
from .config import DEFAULT_CLASSES, DetectorConfig
from .data import DetectionSample, file_sample, filter_boxes, kitti_samples, make_samples
from .engine import evaluate_detector, load_detector, train_detector
from .model import CenterPointDetector
from .viz import save_bev_png, save_loss_png


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        choices=("synthetic", "toy", "kitti"),
        default="synthetic",
        help="scene source: the embedded synthetic generator, tiny hand-made scenes, or a KITTI folder",
    )
    p.add_argument("--kitti-root", default=None, help="KITTI object folder with velodyne/, label_2/, calib/")
    p.add_argument("--val-scenes", type=int, default=8, help="held-out scenes for evaluation")
    p.add_argument("--val-seed", type=int, default=100000, help="first seed of the held-out synthetic/toy scenes")
    p.add_argument("--min-points", type=int, default=5, help="drop boxes holding fewer points (train and eval)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="hide tqdm progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    tr = sub.add_parser("train", help="train a detector and evaluate it on held-out scenes")
    _data_args(tr)
    tr.add_argument("--out", default="runs/detect", help="output folder")
    tr.add_argument("--train-scenes", type=int, default=24)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    tr.add_argument("--batch-size", type=int, default=1)
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--no-augment", action="store_true", help="no rotation / flip / scale augmentation")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument(
        "--range",
        type=float,
        nargs=6,
        default=(-25.6, -25.6, -3.0, 25.6, 25.6, 1.0),
        metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
        help="region of interest (m)",
    )
    tr.add_argument("--voxel-size", type=float, nargs=3, default=(0.2, 0.2, 0.2))
    tr.add_argument("--width", type=int, default=8, help="base width w: sparse stages w, 2w, 4w, 4w")
    tr.add_argument("--nms", choices=("rotate", "circle", "none"), default="rotate")
    ev = sub.add_parser("eval", help="AP of a checkpoint on held-out scenes")
    _data_args(ev)
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    pr = sub.add_parser("predict", help="detect boxes in one KITTI-format .bin scan")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--scan", required=True, help="KITTI-format .bin (float32 x, y, z, intensity)")
    pr.add_argument("--boxes-json", default=None, help="optional ground truth (center_xyz, size_lwh, yaw) to draw")
    pr.add_argument("--out", default="runs/detect-predict")
    pr.add_argument("--score-threshold", type=float, default=None)
    pr.add_argument("--threads", type=int, default=0)


def _held_out(args: argparse.Namespace, cfg: DetectorConfig) -> list[DetectionSample]:
    if args.data == "kitti":
        if not args.kitti_root:
            raise ValueError("--data kitti needs --kitti-root PATH")
        samples = kitti_samples(args.kitti_root)
        samples = samples[max(0, len(samples) - args.val_scenes) :]
    else:
        samples = make_samples(
            args.data, range(args.val_seed, args.val_seed + args.val_scenes), "val scenes", not args.no_progress
        )
    return [filter_boxes(s, cfg.point_range, args.min_points) for s in samples]


def _finite(obj):
    """JSON-safe copy: NaN -> None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _write(out: Path, name: str, payload: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(_finite(payload), indent=2))
    return path


def _png(out: Path, sample: DetectionSample, dets: torch.Tensor, cfg: DetectorConfig, title: str) -> Path:
    return save_bev_png(out / "bev.png", sample.points, cfg.point_range, sample.boxes, dets.numpy(), cfg.classes, title)


def _summary(ap: dict) -> str:
    car = ap.get("car", {})
    return " ".join(f"car {k}={v:.3f}" for k, v in car.items() if k != "n_gt" and not math.isnan(v))


def _train_config(args: argparse.Namespace) -> DetectorConfig:
    """The detector of the options, or the checkpoint's when resuming one."""
    ckpt = Path(args.out) / "checkpoint.pt"
    if args.resume and ckpt.is_file():
        return DetectorConfig.from_dict(load_checkpoint(ckpt, task="detection")["model_config"])
    return DetectorConfig(
        classes=DEFAULT_CLASSES,
        point_range=tuple(args.range),
        voxel_size=tuple(args.voxel_size),
        widths=(args.width, 2 * args.width, 4 * args.width, 4 * args.width),
        out_channels=4 * args.width,
        neck_channels=4 * args.width,
        head_channels=4 * args.width,
        nms=args.nms,
    )


def _train_scenes(args: argparse.Namespace, cfg: DetectorConfig) -> list[DetectionSample]:
    """Training scenes (KITTI: the frames before the held-out tail), boxes with too few points dropped."""
    if args.data == "kitti":
        if not args.kitti_root:
            raise ValueError("--data kitti needs --kitti-root PATH")
        frames = kitti_samples(args.kitti_root)
        train = frames[: max(0, len(frames) - args.val_scenes)][: args.train_scenes]
    else:
        train = make_samples(
            args.data, range(args.seed, args.seed + args.train_scenes), "train scenes", not args.no_progress
        )
    return [filter_boxes(s, cfg.point_range, args.min_points) for s in train]


def _train(args: argparse.Namespace) -> int:
    from ..datasets.augment import default_augmentation  # noqa: PLC0415

    cfg = _train_config(args)
    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    t0 = time.perf_counter()
    train = _train_scenes(args, cfg)
    val = _held_out(args, cfg)
    data_seconds = time.perf_counter() - t0
    torch.manual_seed(args.seed)
    model = CenterPointDetector(cfg).to(args.device)
    aug = None if args.no_augment else default_augmentation(jitter=False)
    result = train_detector(
        model,
        train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=aug,
        seed=args.seed,
        time_budget=args.time_budget,
        checkpoint=ckpt,
        resume=args.resume,
        progress=not args.no_progress,
    )
    metrics, dets = evaluate_detector(model, val, progress=not args.no_progress)
    report = {
        "command": "detect train",
        "data": args.data,
        "train_scenes": len(train),
        "val_scenes": len(val),
        "config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data_seconds": data_seconds,
        **{k: v for k, v in result.items() if k != "history"},
        "final_loss": result["history"][-1] if result["history"] else None,
        "eval": metrics,
        "checkpoint": str(ckpt),
    }
    _write(out, "report.json", report)
    if result["history"]:
        save_loss_png(out / "loss.png", result["history"])
    if val:
        _png(out, val[0], dets[0], cfg, f"{val[0].name}: held-out scene")
    wall, cpu = result["train_seconds"], result["train_cpu_seconds"]
    print(f"trained {result['steps']} steps in {wall:.0f} s ({cpu:.0f} s CPU); held-out {_summary(metrics['ap'])}")
    print(f"wrote {out / 'report.json'}, {out / 'bev.png'}, {ckpt}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    model, ckpt = load_detector(args.checkpoint, args.device)
    val = _held_out(args, model.cfg)
    metrics, dets = evaluate_detector(model, val, progress=not args.no_progress)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    _write(
        out,
        "eval.json",
        {"command": "detect eval", "checkpoint": str(args.checkpoint), "data": args.data, "eval": metrics},
    )
    if val:
        _png(out, val[0], dets[0], model.cfg, f"{val[0].name}: evaluation")
    print(f"{len(val)} scenes: {_summary(metrics['ap'])}; wrote {out / 'eval.json'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    model, _ = load_detector(args.checkpoint)
    if args.score_threshold is not None:
        import dataclasses  # noqa: PLC0415

        model.cfg = dataclasses.replace(model.cfg, score_threshold=args.score_threshold)
    sample = file_sample(args.scan, args.boxes_json)
    t0 = time.perf_counter()
    dets = model.predict([torch.from_numpy(sample.points)])[0]
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    rows = [
        {
            "center_xyz": d[:3].tolist(),
            "size_lwh": d[3:6].tolist(),
            "yaw": float(d[6]),
            "score": float(d[7]),
            "class": model.cfg.classes[int(d[8])],
        }
        for d in dets.to(torch.float64)
    ]
    _write(out, "predictions.json", {"scan": str(args.scan), "frame": "LiDAR", "seconds": seconds, "boxes": rows})
    _png(out, sample, dets, model.cfg, Path(args.scan).name)
    print(f"{len(rows)} boxes in {seconds:.2f} s; wrote {out / 'predictions.json'} and {out / 'bev.png'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "threads", 0):
        torch.set_num_threads(int(args.threads))
    np.set_printoptions(precision=3, suppress=True)
    return {"train": _train, "eval": _eval, "predict": _predict}[args.action](args)
