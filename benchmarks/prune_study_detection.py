"""The pruning study on the detector: structural pruning of the CenterPoint backbone, judged by BEV AP.

One command (CPU; about 25 minutes on a shared 2-core machine)::

    python benchmarks/prune_study_detection.py            # -> benchmarks/results/prune_study_detection/
    python benchmarks/prune_study_detection.py --smoke    # CI-sized

Trains the detector on synthetic scenes for ``--base-seconds`` (cached as
``base.pt`` beside the results; ``--base`` reuses one), then prunes copies of
its sparse backbone — channels by L1 (dependency graph; the BEV neck's input
stays), kernel taps, residual blocks, and a combination — fine-tunes each with
one fixed budget of ``--finetune-seconds`` and records car BEV AP@0.5 on
held-out scenes, parameters, MACs of the backbone, and CPU latency of the
whole detector (voxels in, heat maps out; backbone maps built in every run;
interleaved with the base in one run; one thread). Writes ``study.json``,
``pareto.png`` (latency vs AP) and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_study_report import plot_pareto  # noqa: E402

from torchsparse_lite.detection.config import DEFAULT_CLASSES, DetectorConfig  # noqa: E402
from torchsparse_lite.detection.data import filter_boxes, make_samples  # noqa: E402
from torchsparse_lite.detection.engine import evaluate_detector, load_detector, save_checkpoint, train_detector  # noqa: E402
from torchsparse_lite.detection.model import CenterPointDetector  # noqa: E402
from torchsparse_lite.models.stats import count_macs, count_parameters  # noqa: E402
from torchsparse_lite.prune.blocks import prune_blocks  # noqa: E402
from torchsparse_lite.prune.report import compare_latency  # noqa: E402
from torchsparse_lite.prune.structured import prune_model  # noqa: E402
from torchsparse_lite.prune.surgery import copy_model  # noqa: E402
from torchsparse_lite.prune.taps import prune_taps  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "prune_study_detection"
# name -> what is removed from the backbone, in this order: blocks (fraction), channels (L1 ratio), taps (map work)
RECIPES: dict[str, dict[str, float]] = {
    "channels-l1-50": {"channels": 0.5},
    "taps-magnitude-30": {"taps": 0.3},
    "taps-magnitude-50": {"taps": 0.5},
    "blocks-skip-100": {"blocks": 1.0},
    "blocks-100+channels-50+taps-30": {"blocks": 1.0, "channels": 0.5, "taps": 0.3},
}


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="CI-sized: toy scenes, seconds of training")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--base", type=Path, default=None, help="trained base checkpoint to reuse")
    p.add_argument("--train-scenes", type=int, default=24)
    p.add_argument("--val-scenes", type=int, default=8)
    p.add_argument("--base-seconds", type=float, default=600)
    p.add_argument("--finetune-seconds", type=float, default=120)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--latency-repeats", type=int, default=5)
    args = p.parse_args(argv)
    args.data = "synthetic"
    if args.smoke:
        args.data, args.train_scenes, args.val_scenes = "toy", 2, 1
        args.base_seconds, args.finetune_seconds, args.latency_repeats = 3, 1, 1
        args.out = args.out or Path("runs/prune_study_detection")
    args.out = args.out or OUT
    return args


def _config(width: int) -> DetectorConfig:
    return DetectorConfig(classes=DEFAULT_CLASSES, point_range=(-25.6, -25.6, -3.0, 25.6, 25.6, 1.0),
                          voxel_size=(0.2, 0.2, 0.2), widths=(width, 2 * width, 4 * width, 4 * width),
                          out_channels=4 * width, neck_channels=4 * width, head_channels=4 * width)  # fmt: skip


def _scenes(kind: str, seeds: range, cfg: DetectorConfig) -> list:
    return [filter_boxes(s, cfg.point_range, 5) for s in make_samples(kind, seeds, "scenes", False)]


def _train(model: CenterPointDetector, train: list, seconds: float) -> dict:
    return train_detector(model, train, epochs=10_000, time_budget=seconds, progress=False)


def base_detector(args, train: list) -> tuple[CenterPointDetector, dict]:
    path = args.base or args.out / "base.pt"
    if path.is_file():
        return load_detector(path)[0].eval(), {"reused": str(path)}
    torch.manual_seed(0)
    model = CenterPointDetector(_config(args.width))
    info = _train(model, train, args.base_seconds)
    save_checkpoint(path, model.eval(), None, {"epoch": info["epochs_done"], "step": info["steps"], "history": [],
                                               "elapsed": info["train_seconds"], "cpu": info["train_cpu_seconds"]})
    return model, {k: info[k] for k in ("steps", "epochs_done", "train_seconds", "stopped_by")}


def prune_backbone(recipe: dict[str, float], model: CenterPointDetector, x) -> CenterPointDetector:
    """A copy of the detector whose backbone is pruned by ``recipe`` (fine-tuned by the caller)."""
    out = copy_model(model)
    bb = out.backbone
    if "blocks" in recipe:
        bb = prune_blocks(bb, recipe["blocks"], "skip", [(x, None)]).model
    if "channels" in recipe:  # the BEV neck reads conv_out's channels: they stay
        bb = prune_model(bb, x, "l1", recipe["channels"], ignore=["conv_out.0"])[0].model
    if "taps" in recipe:
        bb = prune_taps(bb, x, recipe["taps"]).model
    out.backbone = bb
    return out


def measure(model, base, val: list, x, repeats: int) -> dict:
    """Car BEV AP@0.5, backbone size and MACs, detector CPU latency ratio against ``base`` (same run)."""
    lat = compare_latency({"base": base, "model": model}, x, repeats)
    metrics, _ = evaluate_detector(model, val, progress=False)
    car = metrics["ap"].get("car", {})
    return {"bev_ap": float(car.get("bev@0.5", float("nan"))), "parameters": count_parameters(model.backbone),
            "macs": count_macs(model.backbone, x), "cpu_ms": lat["model"]["median_cpu_ms"],
            "latency_ratio": lat["model"]["median_cpu_ms"] / lat["base"]["median_cpu_ms"]}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = _config(args.width)
    train = _scenes(args.data, range(0, args.train_scenes), cfg)
    val = _scenes(args.data, range(100_000, 100_000 + args.val_scenes), cfg)
    base, info = base_detector(args, train)
    x = base.voxelize([torch.from_numpy(val[0].points)])
    rows = [{"method": "base", **measure(base, base, val, x, args.latency_repeats)}]
    for name, recipe in RECIPES.items():
        model = prune_backbone(recipe, base, x)
        before = evaluate_detector(model, val, progress=False)[0]["ap"].get("car", {}).get("bev@0.5", float("nan"))
        _train(model, train, args.finetune_seconds)
        rows.append({"method": name, "ap_before_finetune": float(before),
                     **measure(model.eval(), base, val, x, args.latency_repeats)})  # fmt: skip
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "base": info, "rows": rows,
              "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    (args.out / "study.json").write_text(json.dumps(result, indent=1))
    plot_pareto([{**r, "miou": 100 * r["bev_ap"]} for r in rows], args.out / "pareto.png")
    lines = [f"Measured {result['when']}; base {info}. Latency: CPU time of the detector on one held-out scene, "
             "backbone maps built each run, interleaved with the base; car BEV AP@0.5 on held-out scenes.", "",
             "| method | car BEV AP@0.5 | before fine-tune | latency × | backbone params | backbone MACs |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        pre = f"{r['ap_before_finetune']:.3f}" if "ap_before_finetune" in r else ""
        lines.append(f"| {r['method']} | {r['bev_ap']:.3f} | {pre} | {r['latency_ratio']:.2f} | "
                     f"{r['parameters'] / 1e6:.3f} M | {r['macs'] / 1e9:.2f} G |")  # fmt: skip
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    for r in main()["rows"]:
        print(f"{r['method']:32s} car BEV AP {r['bev_ap']:.3f}  latency {r['latency_ratio']:.2f}x")
