"""``python -m torchsparse_lite train``: train MinkUNet segmentation (synthetic scans by default).

The defaults are the README's main job: a small MinkUNet (cr 0.25, 1.36 M
parameters) on 48 cropped synthetic 32-beam scans at 0.2 m voxels (about 10k
voxels each), 6 epochs of batch 1 = 288 AdamW steps, one CPU thread, scored on
8 held-out scans after every epoch.
Run under ``torchrun --nproc_per_node=N -m torchsparse_lite train ...`` for
data-parallel training (DDP: NCCL on GPUs, gloo on the CPU).
"""

from __future__ import annotations

import argparse

from ..models import MODEL_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the train command."""
    d = parser.add_argument_group("data")
    d.add_argument("--data", default="synthetic",
                   help="'synthetic' (default) or a SemanticKITTI folder (velodyne/*.bin + labels/*.label)")
    d.add_argument("--val-data", default=None, help="held-out SemanticKITTI folder (default: split --data)")
    d.add_argument("--val-fraction", type=float, default=0.2, help="share of a --data folder held out (default 0.2)")
    d.add_argument("--train-scans", type=int, default=48, help="synthetic training scans (default 48)")
    d.add_argument("--val-scans", type=int, default=8, help="held-out synthetic scans (default 8)")
    d.add_argument("--full-scans", action="store_true",
                   help="synthetic: full 64-beam 90 m scans instead of the cropped 32-beam 40 m default")
    d.add_argument("--voxel-size", type=float, default=0.2, help="voxel edge in metres (default 0.2)")
    d.add_argument("--max-points", type=int, default=None, help="random subsample of each training scan")
    d.add_argument("--augment", action="store_true", help="random rotation, flips, scaling, jitter")
    m = parser.add_argument_group("model and optimisation")
    m.add_argument("--model", default="minkunet", choices=[n for n in MODEL_NAMES if n.startswith("minkunet")])
    m.add_argument("--cr", type=float, default=0.25, help="width multiplier of all channels (default 0.25)")
    m.add_argument("--epochs", type=int, default=6, help="epochs (default 6)")
    m.add_argument("--batch-size", type=int, default=1, help="scans per step and process (default 1)")
    m.add_argument("--lr", type=float, default=4e-3, help="AdamW peak learning rate (warm-up + cosine)")
    m.add_argument("--weight-decay", type=float, default=1e-4)
    m.add_argument("--class-weights", choices=("none", "sqrt"), default="sqrt",
                   help="loss weights 1/sqrt(class frequency) (default) or none")
    m.add_argument("--seed", type=int, default=0)
    r = parser.add_argument_group("run")
    r.add_argument("--out", default="runs/train", help="output folder: checkpoint, report.json, PNG figures")
    r.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a checkpoint: checkpoint_last.pt, or weights only (model.pt, a pruned "
                        "pruned.pt) at its epoch with a fresh optimizer (no value: OUT/checkpoint_last.pt)")
    r.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs of this invocation (continue later with --resume)")
    r.add_argument("--eval-every", type=int, default=1, help="score held-out scans every N epochs (and at the end)")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument("--threads", type=int, default=1,
                   help="CPU threads per process (default 1: robust on shared machines; 0 = torch's default)")
    r.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    r.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")


def check_arguments(args: argparse.Namespace) -> None:
    """Reject impossible settings with a message naming the option."""
    positive = {"--train-scans": args.train_scans, "--val-scans": args.val_scans, "--epochs": args.epochs,
                "--batch-size": args.batch_size, "--eval-every": args.eval_every}
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not args.voxel_size > 0 or not args.cr > 0 or not args.lr > 0:
        raise ValueError("--voxel-size, --cr and --lr must be > 0")
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.threads < 0 or args.workers < 0:
        raise ValueError("--threads and --workers must be >= 0")


def run(args: argparse.Namespace) -> int:
    """Train; prints a summary; returns 0."""
    from .trainer import run_training  # noqa: PLC0415 - keeps `--help` fast

    check_arguments(args)
    report = run_training(args)
    if report.get("rank", 0) == 0 and "heldout" in report:
        h = report["heldout"]
        print(f"held-out mIoU {h['miou']:.4f} (chance {h['chance_miou']:.4f}), accuracy {h['accuracy']:.4f}; "
              f"{report['parameters']:,} parameters, {report['macs_per_scan'] / 1e9:.2f} GMACs per scan; "
              f"total {report['timing']['total_s']:.0f} s; report in {args.out}/report.json")
    return 0
