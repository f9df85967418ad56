"""Benchmark: dynamic voxel pruning of MinkUNet (cr 0.5) — encoder voxels kept, CPU latency and mIoU.

One command (CPU, ~4 min on a shared 2-core machine at the defaults)::

    python benchmarks/prune_voxels.py

Trains MinkUNet briefly on synthetic scans (or loads ``--checkpoint``), then
compares, on held-out synthetic scans:

* ``base``: the trained model; ``control``: it fine-tuned ``--finetune-steps`` more
  (so extra training is not mistaken for a pruning effect);
* ``norm@k``: voxel drops at every encoder stage keeping the fraction ``k``
  scored by feature norm, as is (``zero-shot``) and fine-tuned the same steps;
* ``learned@k``: a learned keep head per stage, fine-tuned the same steps
  with the budget loss (:func:`~torchsparse_lite.prune.voxels.voxel_budget_loss`).

Outputs are checked before timing (logits for every voxel; keep 1.0 equals the
plain model bit for bit). Latency: single thread, kernel maps built in every
call, all models interleaved on the same scan in one run
(:func:`~torchsparse_lite.prune.report.compare_latency`), ratios against
``control``. Encoder voxels are the rows entering the stem and each stage's
residual blocks. Writes ``benchmarks/results/prune_voxels/summary.json`` and
``summary.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from torchsparse_lite.models import MinkUNet
from torchsparse_lite.models.minkunet import ENCODER_STAGES
from torchsparse_lite.prune.report import compare_latency, fresh_input
from torchsparse_lite.prune.task import finetune, miou, num_classes_of, segmentation_batches
from torchsparse_lite.prune.voxels import apply_voxel_pruning, mean_voxel_stats, voxel_budget_loss
from torchsparse_lite.train.checkpoint import load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cr", type=float, default=0.5)
    p.add_argument("--train-steps", type=int, default=120)
    p.add_argument("--finetune-steps", type=int, default=25)
    p.add_argument("--train-scans", type=int, default=8)
    p.add_argument("--val-scans", type=int, default=4)
    p.add_argument("--voxel-size", type=float, default=0.2)
    p.add_argument("--train-max-points", type=int, default=20000)
    p.add_argument("--keep", type=float, nargs="+", default=[0.7, 0.5], help="kept fraction per encoder stage")
    p.add_argument("--budget-weight", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", help="reuse a trained checkpoint instead of training")
    p.add_argument("--save-checkpoint", default="/tmp/tsl_prune_voxels/minkunet.pt")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prune_voxels"))
    return p.parse_args(argv)


def _base_model(args: argparse.Namespace, train: list, nc: int) -> tuple[MinkUNet, dict]:
    """The ``--checkpoint`` model, or MinkUNet trained ``--train-steps`` (saved to ``--save-checkpoint``)."""
    if args.checkpoint:
        model, saved = load_model(args.checkpoint, task=None)
        return model, {"checkpoint": args.checkpoint, **saved.get("train_info", {})}
    t0 = time.time()
    model = MinkUNet(4, nc, cr=args.cr)
    losses = finetune(model, train, args.train_steps, lr=args.lr, desc="train")
    info = {"steps": args.train_steps, "first_loss": losses[0], "last_loss": losses[-1], "seconds": time.time() - t0}
    save_checkpoint(args.save_checkpoint, model, {}, train_info=info)
    return model, info


def _budget(weight: float):
    """``model -> weight * voxel_budget_loss(model)`` (each stage pulled toward its own keep fraction)."""
    return lambda model: weight * voxel_budget_loss(model)


def _variants(args: argparse.Namespace, base: MinkUNet, train: list) -> dict[str, MinkUNet]:
    """control, norm@k zero-shot / fine-tuned and learned@k fine-tuned (each a copy of ``base``)."""
    lr, steps = args.lr * 0.5, args.finetune_steps
    control = copy.deepcopy(base)
    finetune(control, train, steps, lr=lr, desc="control")
    models = {"base": base, "control": control}
    for k in args.keep:
        zero_shot = apply_voxel_pruning(base, keep=k, scorer="norm", inplace=False)
        models[f"norm@{k} zero-shot"] = zero_shot
        tuned = copy.deepcopy(zero_shot)
        finetune(tuned, train, steps, lr=lr, desc=f"norm@{k}")
        models[f"norm@{k}"] = tuned
        learned = apply_voxel_pruning(base, keep=k, scorer="learned", inplace=False)
        budget = _budget(args.budget_weight)
        finetune(learned, train, steps, lr=lr, desc=f"learned@{k}", extra_loss=budget)
        models[f"learned@{k}"] = learned
    return models


def _check_outputs(models: dict[str, MinkUNet], x) -> None:
    """Logits for every voxel from every model; keep 1.0 at every stage equals the plain model bit for bit."""
    base = models["base"]
    with torch.no_grad():
        for name, m in models.items():
            out = m.eval()(fresh_input(x))
            if out.shape != (len(x), base.num_classes) or not bool(torch.isfinite(out).all()):
                raise RuntimeError(f"{name}: logits {list(out.shape)} are not finite [N={len(x)}, classes]")
        full = apply_voxel_pruning(base, keep=1.0, inplace=False)
        if not torch.equal(full(fresh_input(x)), base(fresh_input(x))):
            raise RuntimeError("keep=1.0 voxel drops changed the outputs: the drop/restore wiring is wrong")


def encoder_voxels(model: MinkUNet, batches: list) -> dict[str, float]:
    """Mean rows entering the stem and each encoder stage's residual blocks (after any drop) over ``batches``."""
    rows = {name: 0 for name in ("stem", *ENCODER_STAGES)}
    hooks = [model.stem.register_forward_pre_hook(lambda _m, a: rows.__setitem__("stem", rows["stem"] + len(a[0])))]
    for s in ENCODER_STAGES:
        hooks.append(getattr(model, s)[1].register_forward_pre_hook(
            lambda _m, a, s=s: rows.__setitem__(s, rows[s] + len(a[0]))))  # fmt: skip
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in batches:
                model(fresh_input(x))
    finally:
        for h in hooks:
            h.remove()
    return {k: v / len(batches) for k, v in rows.items()}


def _encoder_summary(counts: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    stages = sum(counts[s] for s in ENCODER_STAGES)
    stages_base = sum(base[s] for s in ENCODER_STAGES)
    return {
        "stages1_4": stages,
        "fewer_stages1_4": 1 - stages / stages_base,
        "with_stem": stages + counts["stem"],
        "fewer_with_stem": 1 - (stages + counts["stem"]) / (stages_base + base["stem"]),
        "per_level": counts,
    }


def _measure(args, models: dict[str, MinkUNet], val: list, nc: int) -> dict[str, dict]:
    """mIoU, encoder voxels, per-stage kept voxels (val means) and latency of every model."""
    _check_outputs(models, val[0][0])
    base_rows = encoder_voxels(models["base"], val)
    timed = {k: m for k, m in models.items() if k != "base" and not k.endswith("zero-shot")}
    latency = compare_latency(timed, val[0][0], repeats=args.latency_repeats)
    ref = latency["control"]
    out = {}
    for name, m in models.items():
        row = {"miou": miou(m, val, nc), "encoder_voxels": _encoder_summary(encoder_voxels(m, val), base_rows)}
        if m.voxel_drop is not None:
            row["kept_per_stage"] = mean_voxel_stats(m, val)
        lat = latency.get(name)  # base has control's architecture: not timed twice
        if lat is not None:
            row["latency_ms"] = lat
            row["latency_ratio_wall"] = lat["median_ms"] / ref["median_ms"]
            row["latency_ratio_cpu"] = lat["median_cpu_ms"] / ref["median_cpu_ms"]
        out[name] = row
    return out


def plot(results: dict[str, dict], path: Path) -> Path:
    """PNG: latency ratio vs mIoU per model, and encoder voxels per stage relative to the unpruned model."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in results.items():
        if "latency_ratio_cpu" in r:
            a1.scatter(r["latency_ratio_cpu"], r["miou"])
            a1.annotate(name, (r["latency_ratio_cpu"], r["miou"]), fontsize=7)
    a1.set_xlabel("CPU latency / control (1 thread, maps included)")
    a1.set_ylabel("val mIoU (%)")
    a1.set_title("latency vs mIoU")
    base = results["base"]["encoder_voxels"]["per_level"]
    dropping = [n for n, r in results.items() if "kept_per_stage" in r and not n.endswith("zero-shot")]
    width = 0.8 / max(len(dropping), 1)
    for i, name in enumerate(dropping):
        rows = results[name]["encoder_voxels"]["per_level"]
        a2.bar([j + i * width for j in range(len(rows))], [rows[k] / base[k] for k in rows], width, label=name)
    a2.set_xticks([j + 0.4 - width / 2 for j in range(len(base))])
    a2.set_xticklabels(list(base))
    a2.set_ylabel("voxels / unpruned (val mean)")
    a2.set_title("encoder voxels entering each stage's blocks")
    a2.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    nc = num_classes_of(kitti=False)
    train = segmentation_batches(args.train_scans, seed=0, voxel_size=args.voxel_size,
                                 max_points=args.train_max_points)  # fmt: skip
    val = segmentation_batches(args.val_scans, seed=1000, voxel_size=args.voxel_size)
    base, train_info = _base_model(args, train, nc)
    models = _variants(args, base, train)
    results = _measure(args, models, val, nc)
    summary = {"settings": vars(args), "model": base.config(), "train": train_info,
               "val_voxels": [len(x) for x, _ in val], "results": results, "seconds": time.time() - t0}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(results, out / "summary.png")
    for name, r in results.items():
        ratio = r.get("latency_ratio_cpu", float("nan"))
        fewer = r["encoder_voxels"]["fewer_stages1_4"]
        print(f"{name:22s} mIoU {r['miou']:6.2f}  latency x{ratio:.3f}  encoder voxels (stages 1-4) -{fewer:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
