"""The pruning study: which structural method buys the most CPU latency for the least mIoU on a converged MinkUNet.

One command (CPU; the full run takes about an hour on a shared 2-core machine)::

    python benchmarks/prune_study.py                 # full run -> benchmarks/results/prune_study/
    python benchmarks/prune_study.py --smoke         # CI-sized: tiny data, few steps (a test runs it)
    python benchmarks/prune_study.py --base runs/prune_study/base.pt   # reuse a trained base

1. Trains the base MinkUNet on synthetic scans until the held-out mIoU
   plateaus (rounds of ``--round-steps``; stop when a round gains less than
   ``--plateau`` points twice in a row), saves it (``base.pt``, reused on the
   next run unless ``--retrain``).
2. For every method (channels 30/50/70 % by L1, random channels, kernel
   taps, residual blocks, dynamic voxels (feature norm or a learned head
   trained with the budget loss), and combinations) prunes a copy
   through the prune pipeline and fine-tunes it with one fixed budget
   (``--finetune-steps``).
3. The honest baselines: random channel selection, and the architecture of
   the 50 % channel-pruned model trained from scratch for as many steps as
   the base and its fine-tune together ("Rethinking the Value of Network
   Pruning", ICLR'19).
4. Records parameters, MACs, CPU latency with maps built in every run (each
   model interleaved with the base on the same held-out scan; ratio of
   process CPU time, one thread), peak tensor memory of a forward, map
   entries, and held-out mIoU; writes ``study.json``, ``pareto.png``
   (latency vs mIoU) and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_study_report import pareto_front, plot_pareto, write_table  # noqa: E402, F401 - pareto_front re-exported

from torchsparse_lite.bench.memory import cpu_peak_tensor_bytes  # noqa: E402
from torchsparse_lite.models import MinkUNet  # noqa: E402
from torchsparse_lite.prune.config import PruneConfig  # noqa: E402
from torchsparse_lite.prune.pipeline import run_pipeline  # noqa: E402
from torchsparse_lite.prune.report import compare_latency, fresh_input, model_summary  # noqa: E402
from torchsparse_lite.prune.task import (  # noqa: E402
    finetune,
    miou,
    num_classes_of,
    reinitialised,
    segmentation_batches,
    train_to_plateau,
)
from torchsparse_lite.train.checkpoint import load_model, save_checkpoint  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "prune_study"
IGNORE = ["stem.0.conv"]

# name -> PruneConfig fields (ratio: channels); "scratch" trains the 50 % channel architecture anew
METHODS: dict[str, dict] = {
    "channels-l1-30": {"ratio": 0.3},
    "channels-l1-50": {"ratio": 0.5},
    "channels-l1-70": {"ratio": 0.7},
    "channels-random-50": {"ratio": 0.5, "criterion": "random"},
    "taps-magnitude-30": {"ratio": 0.0, "taps": {"ratio": 0.3}},
    "taps-magnitude-50": {"ratio": 0.0, "taps": {"ratio": 0.5}},
    "taps-contribution-50": {"ratio": 0.0, "taps": {"ratio": 0.5, "criterion": "contribution"}},
    "blocks-skip-50": {"ratio": 0.0, "blocks": {"ratio": 0.5}},
    "blocks-skip-100": {"ratio": 0.0, "blocks": {"ratio": 1.0}},
    "channels-50+taps-50": {"ratio": 0.5, "taps": {"ratio": 0.5}},
    "blocks-100+channels-50": {"ratio": 0.5, "blocks": {"ratio": 1.0}},
    "blocks-100+channels-50+taps-50": {"ratio": 0.5, "blocks": {"ratio": 1.0}, "taps": {"ratio": 0.5}},
    "voxels-norm-70": {"ratio": 0.0, "voxels": {"keep": 0.7, "scorer": "norm"}},
    "voxels-learned-70": {"ratio": 0.0, "voxels": {"keep": 0.7}},
    "voxels-learned-50": {"ratio": 0.0, "voxels": {"keep": 0.5}},
    "channels-50+taps-50+voxels-70": {"ratio": 0.5, "taps": {"ratio": 0.5}, "voxels": {"keep": 0.7}},
    "blocks-100+channels-50+taps-50+voxels-70": {"ratio": 0.5, "blocks": {"ratio": 1.0}, "taps": {"ratio": 0.5},
                                                 "voxels": {"keep": 0.7}},
}
SMOKE_METHODS = ("channels-l1-50", "taps-magnitude-50", "blocks-skip-100", "voxels-learned-70")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="CI-sized run: tiny data and budgets, three methods")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {OUT}; smoke: runs/prune_study)")
    p.add_argument("--base", type=Path, default=None, help="trained base checkpoint to reuse")
    p.add_argument("--retrain", action="store_true", help="train the base even if OUT/base.pt exists")
    p.add_argument("--methods", nargs="*", default=None,
                   help=f"subset of {list(METHODS)} (+ scratch); replaces those rows of an earlier study.json")
    p.add_argument("--cr", type=float, default=0.5)
    p.add_argument("--voxel-size", type=float, default=0.3)
    p.add_argument("--train-scans", type=int, default=24)
    p.add_argument("--val-scans", type=int, default=6)
    p.add_argument("--round-steps", type=int, default=60)
    p.add_argument("--max-rounds", type=int, default=12)
    p.add_argument("--plateau", type=float, default=1.0, help="mIoU points a round must gain to count as progress")
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--finetune-steps", type=int, default=120)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--no-scratch", action="store_true", help="skip the train-from-scratch baseline")
    args = p.parse_args(argv)
    if args.smoke:
        args.train_scans, args.val_scans, args.round_steps, args.max_rounds = 2, 1, 3, 2
        args.finetune_steps, args.latency_repeats, args.cr, args.voxel_size = 2, 1, 0.25, 0.6
        args.methods = list(args.methods or SMOKE_METHODS)
        args.out = args.out or Path("runs/prune_study")
    args.out = args.out or OUT
    unknown = sorted(set(args.methods or ()) - set(METHODS) - {"scratch"})
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)} and scratch")
    return args


def base_model(args, train, val, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The converged base: loaded from ``--base`` / ``OUT/base.pt`` or trained now (then saved)."""
    path = args.base or args.out / "base.pt"
    if path.is_file() and not (args.retrain and args.base is None):
        model, ckpt = load_model(path)
        return model, ckpt.get("study", {})
    torch.manual_seed(0)
    model = MinkUNet(4, num_classes, cr=args.cr)
    t0 = time.perf_counter()
    history = train_to_plateau(model, train, val, num_classes, lr=args.lr, round_steps=args.round_steps,
                               max_rounds=args.max_rounds, plateau=args.plateau)  # fmt: skip
    info = {"history": history, "steps": history[-1]["step"], "train_s": time.perf_counter() - t0,
            "plateaued": history[-1]["plateaued"]}  # fmt: skip
    save_checkpoint(path, model.eval(), {"voxel_size": args.voxel_size}, study=info)
    return model.eval(), info


def scratch_model(pruned: torch.nn.Module, steps: int, train, lr: float) -> torch.nn.Module:
    """``pruned``'s architecture, freshly initialised, trained for ``steps`` (the base's plus the fine-tune)."""
    model = reinitialised(pruned)
    finetune(model, train, steps, lr=lr, progress=True, desc="scratch")
    return model


def measure(model, base, x, val, num_classes: int, repeats: int) -> dict:
    """Size, MACs, mIoU, peak memory and CPU latency ratio (maps included) against ``base`` in one run."""
    lat = compare_latency({"base": base, "model": model}, x, repeats)
    with torch.no_grad():
        peak = cpu_peak_tensor_bytes(lambda: model(fresh_input(x)))
    return {**model_summary(model, x), "miou": miou(model, val, num_classes), "peak_bytes": peak,
            "cpu_ms": lat["model"]["median_cpu_ms"], "base_cpu_ms": lat["base"]["median_cpu_ms"],
            "latency_ratio": lat["model"]["median_cpu_ms"] / lat["base"]["median_cpu_ms"]}  # fmt: skip


def run_method(name: str, base, train, val, num_classes: int, args) -> tuple[dict, torch.nn.Module]:
    """Prune a copy of ``base`` by ``METHODS[name]``, fine-tune with the fixed budget, measure."""
    cfg = PruneConfig(ignore=IGNORE, finetune_steps=args.finetune_steps, lr=args.finetune_lr,
                      latency_repeats=1, **METHODS[name])  # fmt: skip
    report = run_pipeline(base, cfg, train, val, num_classes, args.out / "runs" / name, progress=False,
                          save_model=False)  # fmt: skip
    pruned = report["model"]
    row = measure(pruned, base, val[0][0], val, num_classes, args.latency_repeats)
    row.update(method=name, miou_before_finetune=report["pruned_no_finetune"]["metric"])
    if "taps" in report:
        row["map_entries_ratio"] = report["taps"]["map_entries_ratio"]
    if "blocks" in report:
        row["blocks_removed"] = report["blocks"]["removed"]
    if "voxels" in report:
        after = report["voxels"]["after"]
        row["voxels_kept"] = {s: v["keep_ratio"] for s, v in after.items()}
        row["encoder_voxels_kept"] = sum(v["kept"] for v in after.values()) / sum(v["total"] for v in after.values())
    return row, pruned


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    num_classes = num_classes_of(False)
    train = segmentation_batches(args.train_scans, seed=0, voxel_size=args.voxel_size)
    val = segmentation_batches(args.val_scans, seed=10_000, voxel_size=args.voxel_size)
    base, info = base_model(args, train, val, num_classes)
    rows = [{"method": "base", **measure(base, base, val[0][0], val, num_classes, args.latency_repeats)}]
    models = {}
    for name in tqdm([m for m in (args.methods or METHODS) if m != "scratch"], desc="methods"):
        row, models[name] = run_method(name, base, train, val, num_classes, args)
        rows.append(row)
    if not args.no_scratch and "channels-l1-50" in models:
        steps = info.get("steps", args.round_steps) + args.finetune_steps
        scratch = scratch_model(models["channels-l1-50"], steps, train, args.lr)
        rows.append({"method": "scratch-channels-50", "steps": steps,
                     **measure(scratch, base, val[0][0], val, num_classes, args.latency_repeats)})  # fmt: skip
    rows = _merge(args.out / "study.json", rows) if args.methods else rows
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": _machine(),
              "args": {k: str(v) for k, v in vars(args).items()}, "base": info, "rows": rows}  # fmt: skip
    (args.out / "study.json").write_text(json.dumps(result, indent=1))
    plot_pareto(rows, args.out / "pareto.png")
    write_table(result, args.out / "table.md")
    return result


def _merge(path: Path, rows: list[dict]) -> list[dict]:
    """A run of some ``--methods`` replaces their rows (and the base's) in an earlier ``study.json``; keeps the rest."""
    if not path.is_file():
        return rows
    new = {r["method"] for r in rows}
    return rows + [r for r in json.loads(path.read_text())["rows"] if r["method"] not in new]


def _machine() -> str:
    import platform  # noqa: PLC0415

    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread"


if __name__ == "__main__":
    out = main()
    for r in out["rows"]:
        print(f"{r['method']:32s} mIoU {r['miou']:6.2f}  latency {r['latency_ratio']:.2f}x  MACs {r['macs']:.3g}")
