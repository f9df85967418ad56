"""Which channel criterion wins on a sparse-conv net: every criterion and method at one or two ratios, one budget.

One command (CPU, one thread; a few minutes at the default small size)::

    python benchmarks/prune_criteria.py               # -> benchmarks/results/prune_criteria/
    python benchmarks/prune_criteria.py --smoke       # seconds: tiny data, one ratio, three methods

1. Trains a small MinkUNet briefly on synthetic scans (``--train-steps``).
2. For each ratio and method prunes a copy (global selection, stem kept), records the held-out mIoU before
   fine-tuning, fine-tunes with one fixed budget (``--finetune-steps``) and records it again, with
   parameters, MACs and the fraction of channels removed. Methods: the criteria of
   ``torchsparse_lite.prune`` (l1 l2 bn fpgm taylor apoz fisher hessian thinet group_norm), random
   selection (``--seeds`` seeds), least-squares reconstruction after l1 / thinet / random (``+ls``), group
   lasso (penalty training, then the lowest group norms), L0 hard-concrete gates trained toward the ratio,
   and the l1-pruned architecture trained from scratch for as many steps as the base and the fine-tune.
   Group lasso and L0 train for ``--phase-steps`` more steps than the others (column ``extra steps``).
3. Writes ``criteria.json``, ``criteria.png`` (mIoU before / after fine-tuning per method) and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from torchsparse_lite.models import MinkUNet  # noqa: E402
from torchsparse_lite.prune import (  # noqa: E402
    RandomImportance,
    build_dependency_graph,
    channel_norms,
    closed_channels,
    fold_gates,
    plan_pruning,
    prune_groups,
    prune_model,
    reconstruct_consumers,
    train_group_lasso,
    train_l0,
)
from torchsparse_lite.prune.methods import shrunk_layers  # noqa: E402
from torchsparse_lite.prune.report import model_summary  # noqa: E402
from torchsparse_lite.prune.surgery import copy_model  # noqa: E402
from torchsparse_lite.prune.task import (  # noqa: E402
    finetune,
    miou,
    num_classes_of,
    segmentation_batches,
    segmentation_loss,
)

OUT = Path(__file__).resolve().parent / "results" / "prune_criteria"
IGNORE = ["stem.0.conv"]
CRITERIA = ("l1", "l2", "bn", "fpgm", "taylor", "apoz", "fisher", "hessian", "thinet", "group_norm")
RECONSTRUCTED = ("l1", "thinet", "random")
SMOKE_METHODS = ("l1", "thinet+ls", "l0")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny data, one ratio, three methods")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {OUT})")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--cr", type=float, default=0.25)
    p.add_argument("--voxel-size", type=float, default=0.4)
    p.add_argument("--max-points", type=int, default=4000)
    p.add_argument("--train-scans", type=int, default=4)
    p.add_argument("--val-scans", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--finetune-steps", type=int, default=30)
    p.add_argument("--finetune-lr", type=float, default=2e-3)
    p.add_argument("--phase-steps", type=int, default=60, help="training steps of group lasso / L0")
    p.add_argument("--group-lasso-strength", type=float, default=0.3)
    p.add_argument("--seeds", type=int, default=3, help="seeds of the random baseline")
    p.add_argument("--importance-batches", type=int, default=2)
    args = p.parse_args(argv)
    if args.smoke:
        args.ratios, args.train_scans, args.val_scans, args.train_steps = [0.5], 1, 1, 4
        args.finetune_steps, args.phase_steps, args.seeds, args.cr, args.voxel_size = 2, 4, 1, 0.125, 0.6
        args.out = args.out or Path("runs/prune_criteria")
    args.out = args.out or OUT
    return args


def methods(args: argparse.Namespace) -> list[str]:
    names = list(CRITERIA) + [f"random-{s}" for s in range(args.seeds)] + [f"{c}+ls" for c in RECONSTRUCTED]
    names += ["group_lasso", "l0", "scratch"]
    return list(SMOKE_METHODS) if args.smoke else names


def _criterion(name: str) -> str | RandomImportance:
    """A criterion name, or the seeded random baseline for ``random-<seed>`` (``random``: seed 0)."""
    if name.startswith("random"):
        return RandomImportance(int(name.split("-")[1]) if "-" in name else 0)
    return name


def _by_criterion(name: str, base, ratio: float, data: dict) -> tuple[torch.nn.Module, int]:
    """Prune with a criterion (``+ls``: then the least-squares refit of the layers that lost inputs)."""
    crit_name, refit = (name[:-3], True) if name.endswith("+ls") else (name, False)
    res, plan = prune_model(base, data["x"], _criterion(crit_name), ratio, ignore=IGNORE, batches=data["imp"],
                            loss_fn=segmentation_loss)  # fmt: skip
    if refit:
        names = shrunk_layers(plan.graph, base, res)
        reconstruct_consumers(base, res.model, names, data["imp"], 1024,
                              kept_out={n: res.kept[n]["out"] for n in names})  # fmt: skip
    return res.model, 0


def _by_group_lasso(base, ratio: float, data: dict, args) -> tuple[torch.nn.Module, int]:
    """Group-lasso training of a copy, then the lowest channel-group norms at ``ratio``."""
    model = copy_model(base)
    graph = build_dependency_graph(model, data["x"], IGNORE)
    train_group_lasso(model, graph, data["train"], segmentation_loss, args.group_lasso_strength, args.phase_steps)
    plan = plan_pruning(model, data["x"], "group_norm", ratio, graph=graph, scores=channel_norms(model, graph))
    return prune_groups(model, graph, plan.remove).model, args.phase_steps


def _by_l0(base, ratio: float, data: dict, args) -> tuple[torch.nn.Module, int]:
    """Hard-concrete gates trained toward ``ratio`` on a copy, folded, closed channels removed."""
    model = copy_model(base)
    graph = build_dependency_graph(model, data["x"], IGNORE)
    gates, _ = train_l0(model, graph, data["train"], segmentation_loss, ratio, steps=args.phase_steps)
    final = gates.final()
    fold_gates(model, graph, final)
    return prune_groups(model, graph, closed_channels(final)).model, args.phase_steps


def _scratch(base, ratio: float, data: dict, args) -> tuple[torch.nn.Module, int]:
    """The l1-pruned architecture at ``ratio``, re-initialised and trained for the base's steps."""
    model, _ = _by_criterion("l1", base, ratio, data)
    torch.manual_seed(1)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    finetune(model, data["train"], args.train_steps, lr=0.01, progress=False)
    return model, args.train_steps


TRAINED = {"group_lasso": _by_group_lasso, "l0": _by_l0, "scratch": _scratch}


def run_method(name: str, base, ratio: float, data: dict, args) -> dict:
    """One row: prune, mIoU before fine-tuning, fixed fine-tune, mIoU after, size, MACs."""
    t0 = time.perf_counter()
    if name in TRAINED:
        pruned, extra = TRAINED[name](base, ratio, data, args)
    else:
        pruned, extra = _by_criterion(name, base, ratio, data)
    before = miou(pruned, data["val"], data["classes"])
    finetune(pruned, data["train"], args.finetune_steps, lr=args.finetune_lr, progress=False)
    total = build_dependency_graph(base, data["x"], IGNORE).total_channels
    left = sum(g.size for g in build_dependency_graph(pruned, data["x"], IGNORE).groups)
    return {"method": name, "ratio": ratio, "miou_before_finetune": before, "miou": miou(pruned, data["val"],
            data["classes"]), "removed": 1 - left / total, "extra_steps": extra, "seconds": time.perf_counter() - t0,
            **model_summary(pruned, data["x"])}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    torch.set_num_threads(1)
    kw = {"voxel_size": args.voxel_size, "max_points": args.max_points}
    train = segmentation_batches(args.train_scans, seed=0, **kw)
    val = segmentation_batches(args.val_scans, seed=1000, **kw)
    classes = num_classes_of(kitti=False)
    torch.manual_seed(0)
    base = MinkUNet(4, classes, cr=args.cr)
    t0 = time.perf_counter()
    finetune(base, train, args.train_steps, lr=0.01, progress=False, desc="base")
    base.eval()
    data = {"train": train, "val": val, "classes": classes, "x": val[0][0], "imp": train[: args.importance_batches]}
    base_row = {"method": "base", "ratio": 0.0, "miou": miou(base, val, classes), "removed": 0.0,
                "train_s": time.perf_counter() - t0, **model_summary(base, data["x"])}  # fmt: skip
    rows = []
    for ratio in args.ratios:
        for name in methods(args):
            rows.append(run_method(name, base, ratio, data, args))
            r = rows[-1]
            print(f"{ratio:.2f} {name:<12} before fine-tune {r['miou_before_finetune']:5.1f}  after {r['miou']:5.1f}")
    result = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} thread",
              "args": {k: str(v) for k, v in vars(args).items()}, "base": base_row, "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "criteria.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "criteria.png")
    write_table(result, args.out / "table.md")
    return result


def _random_mean(rows: list[dict], ratio: float) -> float:
    vals = [r["miou"] for r in rows if r["ratio"] == ratio and r["method"].startswith("random-")]
    return statistics.mean(vals) if vals else float("nan")


def plot(result: dict, path: Path) -> Path:
    """One panel per ratio: mIoU before (light) and after (dark) the fixed fine-tune, per method."""
    ratios = sorted({r["ratio"] for r in result["rows"]})
    fig, axes = plt.subplots(len(ratios), 1, figsize=(11, 3.6 * len(ratios)), squeeze=False)
    for ax, ratio in zip(axes[:, 0], ratios):
        rows = [r for r in result["rows"] if r["ratio"] == ratio]
        xs = range(len(rows))
        before, after = [r["miou_before_finetune"] for r in rows], [r["miou"] for r in rows]
        ax.bar([x - 0.2 for x in xs], before, 0.4, color="#9ecae1", label="before fine-tune")
        ax.bar([x + 0.2 for x in xs], after, 0.4, color="#08519c", label="after fine-tune")
        ax.axhline(result["base"]["miou"], color="k", ls="--", lw=1, label="unpruned")
        ax.axhline(_random_mean(result["rows"], ratio), color="tab:red", ls=":", lw=1, label="random (mean)")
        ax.set_xticks(list(xs), [r["method"] for r in rows], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("held-out mIoU (%)")
        ax.set_title(f"{ratio:.0%} of the channels removed")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_table(result: dict, path: Path) -> Path:
    """``table.md``: per ratio, the methods by mIoU after the fine-tune, with the margin over random."""
    base = result["base"]
    a = result["args"]
    lines = [f"Measured {result['when']} on {result['machine']}. Base: MinkUNet cr {a['cr']}, {a['train_steps']} "
             f"steps, held-out mIoU {base['miou']:.1f}, {base['parameters'] / 1e6:.3f} M params, "
             f"{base['macs'] / 1e9:.3f} G MACs. Fine-tune: {a['finetune_steps']} steps for every method. Small "
             "synthetic data: a point or two is within noise (compare the random seeds).", "",
             "`+ls`: least-squares refit of the layers that lost inputs, before the fine-tune. `extra steps`: training "
             "beyond the others' (the group-lasso / L0 phases; scratch: its whole training, so its 'before "
             "fine-tune' is after it). L0 removes what its gates close (target: the ratio) and spends the "
             "budget on channels, not MACs: compare its MACs.", ""]  # fmt: skip
    for ratio in sorted({r["ratio"] for r in result["rows"]}):
        rand = _random_mean(result["rows"], ratio)
        lines += [f"### {ratio:.0%} of the channels", "",
                  "| method | mIoU before fine-tune | mIoU after | vs random | removed | params | MACs | extra steps |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        rows = sorted((r for r in result["rows"] if r["ratio"] == ratio), key=lambda r: -r["miou"])
        for r in rows:
            margin = f"{r['miou'] - rand:+.1f}" if rand == rand else "n/a"  # NaN without random rows
            lines.append(f"| {r['method']} | {r['miou_before_finetune']:.1f} | {r['miou']:.1f} "
                         f"| {margin} | {r['removed']:.2f} | {r['parameters'] / 1e6:.3f} M "
                         f"| {r['macs'] / 1e9:.3f} G | {r['extra_steps']} |")  # fmt: skip
        lines.append("")
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    main()
