"""Which channel criterion and method wins on a converged sparse-conv net: all of them at 30 / 50 / 70 %, one budget.

One command (CPU, one thread; about an hour at the default size, the base trained once and reused)::

    python benchmarks/prune_criteria.py            # -> benchmarks/results/prune_study/criteria/
    python benchmarks/prune_criteria.py --smoke    # seconds: tiny data, one ratio, a few methods

1. Trains a MinkUNet (cr 0.25) on synthetic scans until its held-out mIoU plateaus
   (:func:`torchsparse_lite.prune.task.train_to_plateau`), or loads it from ``OUT/base.pt``.
2. For each ratio and method prunes a copy (stem kept), records the held-out mIoU before fine-tuning,
   fine-tunes with one fixed budget (``--finetune-steps``, every method) and records it again, with
   parameters, MACs, the fraction of channels removed and the CPU latency with maps built in the call,
   interleaved with the base in one run (median ratio). The methods (:data:`METHODS`):
   * the criteria of ``torchsparse_lite.prune`` (one-shot, global selection) and random selection
     (``--seeds`` seeds); ``+ls``: the least-squares refit of the layers that lost inputs;
   * training-based: group lasso, L0 gates, ADMM, SCP soft masks (``--phase-steps`` extra steps);
   * searches at the MACs of the l1-pruned network at that ratio, scoring candidates on ``--search-scans``
     scans held out from both training and the reported validation: NetAdapt (MACs as its cost), AMC
     (DDPG), AutoSlim (a slimmable supernet trained ``--phase-steps`` sandwich steps, then greedy slimming);
   * the l1-pruned architecture trained from scratch for the base's steps;
   * and, once, 2:4 N:M masks on every conv of the base (fine-tuned with the masks held).
3. Writes ``criteria.json``, ``criteria.png`` (mIoU before / after per method), ``pareto.png`` (latency vs
   mIoU) and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_criteria_methods import METHODS, SMOKE_METHODS, prune_by  # noqa: E402
from prune_study_report import plot_criteria, plot_pareto, write_criteria_table  # noqa: E402

from torchsparse_lite.models import MinkUNet  # noqa: E402
from torchsparse_lite.prune import build_dependency_graph  # noqa: E402
from torchsparse_lite.prune.report import compare_latency, model_summary  # noqa: E402
from torchsparse_lite.prune.task import (  # noqa: E402
    finetune,
    miou,
    num_classes_of,
    segmentation_batches,
    train_to_plateau,
)
from torchsparse_lite.train.checkpoint import load_model, save_checkpoint  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "prune_study" / "criteria"
IGNORE = ["stem.0.conv"]


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny data, one ratio, a few methods")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {OUT})")
    p.add_argument("--retrain", action="store_true", help="train the base even if OUT/base.pt exists")
    p.add_argument("--report", action="store_true", help="redraw the plots and table from OUT/criteria.json only")
    p.add_argument("--methods", nargs="*", default=None, help=f"subset of {list(METHODS)}")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--cr", type=float, default=0.25)
    p.add_argument("--voxel-size", type=float, default=0.4)
    p.add_argument("--max-points", type=int, default=4000)
    p.add_argument("--train-scans", type=int, default=96)
    p.add_argument("--val-scans", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-3, help="base training rate")
    p.add_argument("--round-steps", type=int, default=200)
    p.add_argument("--max-rounds", type=int, default=30)
    p.add_argument("--plateau", type=float, default=0.5, help="mIoU a round must add to the best to count")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--phase-steps", type=int, default=100, help="training steps of the training-based methods")
    p.add_argument("--search-episodes", type=int, default=40, help="AMC episodes (a tenth of them warm-up)")
    p.add_argument("--search-scans", type=int, default=2, help="held-out scans the searches score candidates on")
    p.add_argument("--slim-step", type=float, default=0.25, help="AutoSlim: fraction of a group per greedy step")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the random baseline")
    p.add_argument("--importance-batches", type=int, default=4)
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--latency-points", type=int, default=20000, help="points of the scan timed for latency")
    args = p.parse_args(argv)
    if args.smoke:
        args.ratios, args.train_scans, args.val_scans, args.round_steps, args.max_rounds = [0.5], 1, 1, 3, 1
        args.finetune_steps, args.phase_steps, args.seeds, args.cr, args.voxel_size = 2, 3, 1, 0.125, 0.6
        args.search_scans, args.slim_step = 1, 0.5
        args.search_episodes, args.latency_repeats, args.latency_points = 3, 1, 2000
        args.methods = list(args.methods or SMOKE_METHODS)
        args.out = args.out or Path("runs/prune_criteria")
    args.out = args.out or OUT
    unknown = sorted(set(args.methods or ()) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return args


def method_names(args: argparse.Namespace) -> list[str]:
    """The methods to run, the random baseline expanded to ``random-<seed>`` for each seed."""
    out = []
    for name in args.methods or METHODS:
        out += [f"random-{s}" for s in range(args.seeds)] if name == "random" else [name]
    return out


def base_model(args: argparse.Namespace, data: dict) -> tuple[torch.nn.Module, dict]:
    """The converged base: ``OUT/base.pt`` when there (and not ``--retrain``), else trained now and saved."""
    path = args.out / "base.pt"
    if path.is_file() and not args.retrain:
        model, ckpt = load_model(path)
        return model.eval(), ckpt["study"]
    torch.manual_seed(0)
    model = MinkUNet(4, data["classes"], cr=args.cr)
    t0 = time.perf_counter()
    history = train_to_plateau(model, data["train"], data["val"], data["classes"], lr=args.lr,
                               round_steps=args.round_steps, max_rounds=args.max_rounds, plateau=args.plateau,
                               patience=args.patience)  # fmt: skip
    info = {"history": history, "steps": history[-1]["step"], "train_s": time.perf_counter() - t0,
            "plateaued": history[-1]["plateaued"]}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model.eval(), {"voxel_size": args.voxel_size}, study=info)
    return model, info


def measure(model: torch.nn.Module, base: torch.nn.Module, data: dict, args: argparse.Namespace) -> dict:
    """mIoU, size, MACs, channels removed and the CPU latency ratio against ``base`` (maps built in the call)."""
    lat = compare_latency({"base": base, "model": model}, data["latency_x"], args.latency_repeats)
    total = data["base_channels"]
    left = sum(g.size for g in build_dependency_graph(model, data["x"], IGNORE).groups)
    return {"miou": miou(model, data["val"], data["classes"]), "removed": 1 - left / total,
            "latency_ratio": lat["model"]["median_cpu_ms"] / lat["base"]["median_cpu_ms"],
            "latency_ms": lat["model"]["median_cpu_ms"], **model_summary(model, data["x"])}  # fmt: skip


def run_method(name: str, base: torch.nn.Module, ratio: float, data: dict, args: argparse.Namespace) -> dict:
    """One row: prune, mIoU before fine-tuning, the fixed fine-tune, then :func:`measure`."""
    t0 = time.perf_counter()
    out = prune_by(name, base, ratio, data, args)
    before = miou(out.model, data["val"], data["classes"])
    finetune(out.model, data["train"], args.finetune_steps, lr=args.finetune_lr, progress=False)
    row = {"method": name, "ratio": ratio, "miou_before_finetune": before, "extra_steps": out.extra_steps}
    row.update(measure(out.finish(out.model), base, data, args))
    row["seconds"] = time.perf_counter() - t0
    return row


def kept_rows(path: Path, base_row: dict, jobs: list[tuple[float, str]]) -> list[dict]:
    """Rows of an earlier run on the same base (``path``) that this run does not redo; none for another base."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    same = all(old["base"][k] == base_row[k] for k in ("parameters", "macs"))
    if not same or abs(old["base"]["miou"] - base_row["miou"]) > 0.05:  # the last bits of the conv may differ
        return []
    redo = set(jobs)
    return [r for r in old["rows"] if (r["ratio"], r["method"]) not in redo]


def load_data(args: argparse.Namespace) -> dict:
    kw = {"voxel_size": args.voxel_size, "max_points": args.max_points}
    train = segmentation_batches(args.train_scans, seed=0, **kw)
    val = segmentation_batches(args.val_scans, seed=1000, **kw)
    search = segmentation_batches(args.search_scans, seed=3000, **kw)
    [(lat_x, _)] = segmentation_batches(1, seed=2000, voxel_size=args.voxel_size, max_points=args.latency_points)
    return {"train": train, "val": val, "classes": num_classes_of(kitti=False), "x": val[0][0],
            "imp": train[: args.importance_batches], "latency_x": lat_x, "ignore": IGNORE,
            "search": search}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    if args.report:
        return report(json.loads((args.out / "criteria.json").read_text()), args.out)
    torch.set_num_threads(1)
    data = load_data(args)
    base, info = base_model(args, data)
    data["base_steps"] = info["steps"]
    data["base_channels"] = build_dependency_graph(base, data["x"], IGNORE).total_channels  # traced once, not per row
    base_row = {"method": "base", "ratio": 0.0, "miou": miou(base, data["val"], data["classes"]), "removed": 0.0,
                "latency_ratio": 1.0, **model_summary(base, data["x"])}  # fmt: skip
    names = method_names(args)
    jobs = [(r, n) for r in args.ratios for n in names if n != "nm-2:4"] + [(0.0, "nm-2:4")] * ("nm-2:4" in names)
    rows = kept_rows(args.out / "criteria.json", base_row, jobs)
    result = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} thread",
              "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}, "base_training": info,
              "base": base_row, "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for ratio, name in tqdm(jobs, desc="methods"):
        rows.append(run_method(name, base, ratio, data, args))
        r = rows[-1]
        tqdm.write(f"{ratio:.2f} {name:<12} before fine-tune {r['miou_before_finetune']:5.1f}  after {r['miou']:5.1f}"
                   f"  latency x{r['latency_ratio']:.2f}")  # fmt: skip
        (args.out / "criteria.json").write_text(json.dumps(result, indent=1))  # after every row: resumable
    return report(result, args.out)


def report(result: dict, out: Path) -> dict:
    """``criteria.png``, one ``pareto_<ratio>.png`` per channel ratio and ``table.md`` from ``result``."""
    rows = result["rows"]
    plot_criteria(result, out / "criteria.png")
    for ratio in sorted({r["ratio"] for r in rows} - {0.0}):
        controls = [{**r, "method": f"{r['method']} (all channels)"} for r in rows if r["ratio"] == 0.0]
        at = [result["base"], *controls, *(r for r in rows if r["ratio"] == ratio)]
        plot_pareto(at, out / f"pareto_{round(ratio * 100)}.png",
                    title=f"{ratio:.0%} of the channels: CPU latency vs mIoU after the same fine-tune")  # fmt: skip
    write_criteria_table(result, out / "table.md")
    return result


if __name__ == "__main__":
    main()
