"""``python -m torchsparse_lite eval``: score a segmentation checkpoint on held-out scans (per-point mIoU)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the eval command."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by train or prune")
    parser.add_argument("--data", default=None,
                        help="'synthetic' or a SemanticKITTI folder (default: the checkpoint's held-out data)")
    parser.add_argument("--scans", type=int, default=None, help="synthetic: held-out scans (default: as trained)")
    parser.add_argument("--seed", type=int, default=None,
                        help="synthetic: seed of the first held-out scan (default: the training run's held-out seed)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder for eval.json and PNG figures (default: none written)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0 = torch's default)")
    parser.add_argument("--no-progress", action="store_true")


def _dataset(args: argparse.Namespace, ckpt: dict):
    from .data import VAL_SEED_OFFSET, folder_split, synthetic_split  # noqa: PLC0415

    source = ckpt["data"].get("source", {})
    voxel = float(ckpt["data"]["voxel_size"])
    data = args.data or ("synthetic" if source.get("kind") == "synthetic" else source.get("val"))
    if data is None:
        raise ValueError("--data is required: the checkpoint does not record its held-out data")
    if data == "synthetic":
        seed = args.seed if args.seed is not None else source.get("val_seed", VAL_SEED_OFFSET)
        scans = args.scans if args.scans is not None else source.get("val_scans", 8)
        if scans < 1:
            raise ValueError(f"--scans must be >= 1, got {scans}")
        ds = synthetic_split(scans, seed, voxel, full_scans=bool(source.get("full_scans", False)))
        return ds, {"kind": "synthetic", "seed": seed, "scans": scans}
    ds = folder_split(data, voxel)
    return ds, {"kind": "semantickitti", "folder": str(data), "scans": len(ds)}


def run(args: argparse.Namespace) -> int:
    """Evaluate; prints per-class IoU and mIoU; writes eval.json (+ figures) under --out."""
    import torch  # noqa: PLC0415

    from .checkpoint import load_model, require_data  # noqa: PLC0415
    from .data import eval_loader  # noqa: PLC0415
    from .distributed import DistContext, pick_device  # noqa: PLC0415
    from .engine import evaluate  # noqa: PLC0415
    from .figures import plot_class_iou, plot_topdown  # noqa: PLC0415
    from .metrics import summarize  # noqa: PLC0415

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ctx = DistContext(device=pick_device(args.device))
    model, ckpt = load_model(args.checkpoint, map_location=ctx.device, task="segmentation")
    require_data(ckpt, ("voxel_size", "class_names"), args.checkpoint)
    ds, described = _dataset(args, ckpt)
    if list(ds.class_names) != list(ckpt["data"]["class_names"]):
        raise ValueError(f"--data has classes {ds.class_names}, the checkpoint {ckpt['data']['class_names']}")
    point_cm, voxel_cm, kept = evaluate(model, eval_loader(ds, args.batch_size, ctx), ds.num_classes, ctx,
                                        ignore_index=ds.ignore_index, progress=not args.no_progress, keep=1)
    summary = summarize(point_cm, ds.class_names)
    report = {"command": "eval", "checkpoint": str(args.checkpoint), "data": described,
              "voxel_size": ckpt["data"]["voxel_size"], "points": summary,
              "voxels": summarize(voxel_cm, ds.class_names), "seconds": round(time.perf_counter() - t0, 2)}
    for name, v in summary["iou"].items():
        print(f"  {name:<14} {'n/a' if v is None else f'{v:.4f}'}")
    print(f"mIoU {summary['miou']:.4f}  accuracy {summary['accuracy']:.4f}  ({summary['points']:,} points)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        figs = {"class_iou": str(plot_class_iou(summary["iou"], out / "eval_class_iou.png",
                                                title="per-class IoU (eval)"))}
        if kept:
            pts, _ = ds.load_scan(kept[0]["index"])
            figs["prediction_topdown"] = str(plot_topdown(pts, kept[0]["pred"].numpy(), ds.class_names,
                                                          out / "eval_topdown.png", labels=kept[0]["labels"].numpy(),
                                                          ignore_index=ds.ignore_index))
        report["figures"] = figs
        (out / "eval.json").write_text(json.dumps(report, indent=2))
    return 0
