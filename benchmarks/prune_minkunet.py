"""Benchmark: 50 % of MinkUNet's channels removed globally by L1, before/after size, latency and mIoU.

One command (CPU, ~30 min on a shared 2-core machine)::

    python benchmarks/prune_minkunet.py

Trains MinkUNet on synthetic scans briefly (or loads ``--checkpoint``), prunes
50 % of the prunable channels (global L1, stem conv excluded), checks the pruned
model against the masked original, fine-tunes shortly, and measures parameters,
MACs, CPU latency (original and pruned interleaved on the same input in the
same run; a held-out synthetic scan and, when present, the SemanticKITTI scan)
and voxel mIoU on held-out synthetic scans; as a control the unpruned model is
fine-tuned for the same number of steps. Writes
``benchmarks/results/prune_minkunet.json`` / ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

from torchsparse_lite.models import MinkUNet
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.pipeline import run_pipeline
from torchsparse_lite.prune.task import finetune, miou, num_classes_of, segmentation_batches
from torchsparse_lite.train.checkpoint import load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TORCHSPARSE_LITE_DATA") or ROOT.parent / "shared" / "data")
KITTI_SCAN = "semantickitti/000000.bin"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cr", type=float, default=1.0)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--finetune-steps", type=int, default=40)
    p.add_argument("--train-scans", type=int, default=16)
    p.add_argument("--val-scans", type=int, default=4)
    p.add_argument("--voxel-size", type=float, default=0.2)
    p.add_argument("--train-max-points", type=int, default=40000)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--data-root",
        type=Path,
        default=DATA,
        help="folder with semantickitti/000000.bin, also timed when present "
        "(default $TORCHSPARSE_LITE_DATA or ../shared/data beside the repo)",
    )
    p.add_argument("--checkpoint", help="reuse a trained checkpoint instead of training")
    p.add_argument("--save-checkpoint", default="/tmp/tsl_prune_bench/minkunet.pt")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prune_minkunet"))
    return p.parse_args(argv)


def _trained_model(args: argparse.Namespace, train: list, nc: int) -> tuple[torch.nn.Module, dict]:
    """The ``--checkpoint`` model, or MinkUNet trained ``--train-steps`` (saved to ``--save-checkpoint``)."""
    t0 = time.time()
    if args.checkpoint:
        model, saved = load_model(args.checkpoint, task=None)
        return model, {"checkpoint": args.checkpoint, **saved.get("train_info", {})}
    model = MinkUNet(4, nc, cr=args.cr)
    losses = finetune(model, train, args.train_steps, lr=0.01, desc="train")
    info = {"steps": args.train_steps, "first_loss": losses[0], "last_loss": losses[-1], "seconds": time.time() - t0}
    save_checkpoint(args.save_checkpoint, model, {}, train_info=info)
    return model, info


def _summary(args, model, report: dict, train_info: dict, latency_inputs: dict, control_miou: float) -> dict:
    return {
        "device_cpu_threads": args.threads,
        "model": model.config(),
        "train": train_info,
        "voxels": {k: len(v) for k, v in latency_inputs.items()},
        "params": [report["before"]["parameters"], report["after"]["parameters"]],
        "macs": [report["before"]["macs"], report["after"]["macs"]],
        "latency_ratio_wall_median": report["latency_ratio"],
        "latency_ratio_process_cpu_time_median": report["cpu_time_ratio"],
        "latency_ms": report["latency"],
        "miou_before": report["before"]["metric"],
        "miou_pruned_no_finetune": report["pruned_no_finetune"]["metric"],
        "miou_after_finetune": report["after"]["metric"],
        "miou_drop": report["metric_drop"],
        "miou_unpruned_same_finetune": control_miou,
        "miou_drop_vs_control": control_miou - report["after"]["metric"],
        "pruned_vs_masked_max_abs_diff": report["pruned_vs_masked_max_abs_diff"],
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nc = num_classes_of(kitti=False)
    train = segmentation_batches(args.train_scans, seed=0, voxel_size=args.voxel_size,
                                 max_points=args.train_max_points)  # fmt: skip
    val = segmentation_batches(args.val_scans, seed=1000, voxel_size=args.voxel_size)
    t0 = time.time()
    model, train_info = _trained_model(args, train, nc)
    train_info["val_miou"] = miou(model, val, nc)
    latency_inputs = {"val": val[0][0]}
    kitti = args.data_root / KITTI_SCAN
    if kitti.exists():
        latency_inputs["kitti"] = segmentation_batches(1, voxel_size=args.voxel_size, kitti=str(kitti))[0][0]
    else:
        print(f"SemanticKITTI scan not timed: {kitti} is absent (see --data-root)", file=sys.stderr)
    cfg = PruneConfig(criterion=args.criterion, ratio=args.ratio, finetune_steps=args.finetune_steps,
                      latency_repeats=args.latency_repeats, lr=0.005)  # fmt: skip
    report = run_pipeline(model, cfg, train, val, nc, args.out, latency_inputs, save_model=False)
    pruned = report.pop("model")
    save_checkpoint(Path(args.save_checkpoint).with_name("pruned.pt"), pruned, {}, prune_config=cfg.__dict__.copy())
    # control: the unpruned model fine-tuned just as long, so extra training is not mistaken for pruning gains
    control = copy.deepcopy(model)
    finetune(control, train, args.finetune_steps, lr=cfg.lr, desc="control fine-tune")
    summary = _summary(args, model, report, train_info, latency_inputs, miou(control, val, nc))
    summary["seconds"] = time.time() - t0
    out = Path(args.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
