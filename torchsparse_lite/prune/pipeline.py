"""The full pruning run behind the CLI and the benchmark: analyse, prune, fine-tune, measure, report."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .graph import build_dependency_graph
from .importance import bn_l1_penalty, get_criterion
from .masks import apply_nm_sparsity, is_nm_sparse, prunable_weights, remove_masks, sparsity
from .netadapt import netadapt_search
from .permute import permute_for_nm
from .report import compare_latency, model_summary, plot_report, write_json
from .schedule import iterative_prune, plot_sensitivity, ratios_for_drop, sensitivity_analysis
from .select import select_channels
from .surgery import channel_shapes, copy_model, mask_groups, prune_groups
from .task import Batch, finetune, miou, segmentation_loss

SCHEDULES = ("oneshot", "iterative", "netadapt")


@dataclass
class PruneConfig:
    """Options of a pruning run (the CLI's ``--config`` JSON holds any of these keys).

    criterion: l1 l2 bn fpgm taylor apoz fisher random; ratio / mode / normalize /
    max_ratio / round_to: channel selection (:func:`~.select.select_channels`);
    ignore: modules whose output channels stay; schedule: oneshot, iterative
    (``steps`` cubic steps, ``rewind`` = lottery-ticket rewinding to the
    unpruned weights, or to a checkpoint path such as an early-training one)
    or netadapt (``netadapt_target``: fraction of the measured CPU time,
    ``netadapt_step``, ``netadapt_iters``); sensitivity: scan each group at
    ``sensitivity_ratios``, and with ``max_drop`` use the derived per-layer
    ratios; finetune_steps / lr: fine-tune after pruning (split over the
    iterative steps); nm: ``{"n": 2, "m": 4, "permute": true}`` adds N:M masks
    after channel pruning (kept through fine-tuning, then baked);
    slimming_steps / bn_penalty: train with an L1 penalty on BN gammas before
    scoring (Network Slimming); latency_repeats; importance_batches: batches
    fed to data-driven criteria.
    """

    criterion: str = "l1"
    ratio: float = 0.5
    mode: str = "global"
    ignore: list[str] = field(default_factory=lambda: ["stem.0.conv"])
    normalize: str = "mean"
    max_ratio: float = 0.9
    round_to: int = 1
    schedule: str = "oneshot"
    steps: int = 3
    rewind: bool | str = False
    sensitivity: bool = False
    sensitivity_ratios: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    max_drop: float | None = None
    netadapt_target: float = 0.6
    netadapt_step: float = 0.25
    netadapt_iters: int = 10
    finetune_steps: int = 50
    lr: float = 0.005
    nm: dict | None = None
    latency_repeats: int = 3
    bn_penalty: float = 0.0
    slimming_steps: int = 0
    importance_batches: int = 2

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known - {"data"})
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; valid keys: {sorted(known | {'data'})}")
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"config schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
        get_criterion(cfg.criterion)
        return cfg


def _latencies(models: dict[str, nn.Module], inputs: dict[str, object], repeats: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for label, x in inputs.items():
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for dev in devices:
            moved = {k: copy_model(m).to(dev) for k, m in models.items()}
            res = compare_latency(moved, x.to(dev), repeats)
            for k, v in res.items():
                out.setdefault(k, {})[f"{dev}_{label}"] = v
    return out


def _rewind_state(model: nn.Module, rewind: bool | str) -> dict | None:
    """Weights to rewind to: none, the unpruned model's (True), or a checkpoint's (early-training path)."""
    if not rewind:
        return None
    if isinstance(rewind, str):
        from .cmd import load_checkpoint  # noqa: PLC0415 - cmd imports this module

        return load_checkpoint(rewind).state_dict()
    return copy.deepcopy(model.state_dict())


def run_pipeline(
    model: nn.Module,
    cfg: PruneConfig,
    train: list[Batch],
    val: list[Batch],
    num_classes: int,
    out_dir: str | Path,
    latency_inputs: dict[str, object] | None = None,
    progress: bool = True,
    save_model: bool = True,
) -> dict:
    """Prune ``model`` as ``cfg`` says and write ``report.json`` + PNGs into ``out_dir``.

    Args:
        train: batches for data-driven criteria and fine-tuning.
        val: held-out batches for the metric (voxel mIoU, %).
        latency_inputs: name -> SparseTensor timed for both models (default: the first val input).
        save_model: also write ``pruned.pt`` (state dict + channel shapes + config).

    Returns:
        The report dict (also written to ``out_dir/report.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = copy_model(model).eval()
    example = val[0][0]
    evaluate = functools.partial(miou, batches=val, num_classes=num_classes)
    def tune(m: nn.Module, steps: int, desc: str = "fine-tune", penalty: float = 0.0) -> list[float]:
        extra = (lambda mm: bn_l1_penalty(mm, penalty)) if penalty > 0 else None
        return finetune(m, train, steps, lr=cfg.lr, progress=progress, desc=desc, extra_loss=extra)

    imp_batches = train[: cfg.importance_batches]
    sel_kw = {"normalize": cfg.normalize, "max_ratio": cfg.max_ratio, "round_to": cfg.round_to}
    report: dict = {"config": cfg.__dict__.copy(), "before": {"metric": evaluate(model)}}
    report["before"].update(model_summary(model, example))
    if cfg.slimming_steps:  # Network Slimming: train with an L1 penalty on BN gammas first
        report["slimming_losses"] = tune(model, cfg.slimming_steps, "slimming", cfg.bn_penalty or 1e-4)
        report["after_slimming"] = {"metric": evaluate(model)}
    graph = build_dependency_graph(model, example, cfg.ignore)
    crit = get_criterion(cfg.criterion)
    ratio: float | dict = cfg.ratio
    mode = cfg.mode
    if cfg.sensitivity:
        scores = crit(model, graph, imp_batches, segmentation_loss)
        sens = sensitivity_analysis(model, graph, scores, evaluate, cfg.sensitivity_ratios, progress)
        plot_sensitivity(sens, str(out_dir / "sensitivity.png"))
        report["sensitivity"] = sens
        if cfg.max_drop is not None:
            ratio, mode = ratios_for_drop(sens, cfg.max_drop), "local"
            report["derived_ratios"] = ratio
    if cfg.schedule == "netadapt":
        lat_x = next(iter((latency_inputs or {"val": example}).values()))
        lat_fn = lambda m: compare_latency({"m": m}, lat_x, cfg.latency_repeats)["m"]["median_cpu_ms"]  # noqa: E731
        pruned, hist = netadapt_search(
            model, example, lat_fn, evaluate, cfg.netadapt_target, step_fraction=cfg.netadapt_step,
            criterion=crit, ignore=cfg.ignore, max_iters=cfg.netadapt_iters, progress=progress,
        )  # fmt: skip
        report["netadapt"] = hist
    elif cfg.schedule == "iterative":
        per_step = max(1, cfg.finetune_steps // max(cfg.steps, 1))
        res = iterative_prune(
            model, example, float(cfg.ratio), cfg.steps, criterion=crit, ignore=cfg.ignore,
            finetune=lambda m: tune(m, per_step, desc="fine-tune step"), evaluate=evaluate,
            batches=imp_batches, loss_fn=segmentation_loss,
            rewind_state=_rewind_state(model, cfg.rewind), progress=progress, **sel_kw,
        )  # fmt: skip
        pruned, report["iterative"] = res.model, res.history
    else:
        scores = crit(model, graph, imp_batches, segmentation_loss)
        remove = select_channels(scores, graph, ratio, mode=mode, **sel_kw)  # type: ignore[arg-type]
        pruned = prune_groups(model, graph, remove).model
        with torch.no_grad():
            diff = (pruned(example) - mask_groups(model, graph, remove)(example)).abs().max()
        report["pruned_vs_masked_max_abs_diff"] = float(diff)
        report["kept_channels"] = {g.name: [g.size, g.size - len(remove.get(g.gid, ()))] for g in graph.groups}
    if "kept_channels" not in report:
        after = {g.name: g.size for g in build_dependency_graph(pruned, example, cfg.ignore).groups}
        report["kept_channels"] = {g.name: [g.size, after.get(g.name, g.size)] for g in graph.groups}
    report["pruned_no_finetune"] = {"metric": evaluate(pruned)}
    if cfg.nm:
        n, m = int(cfg.nm.get("n", 2)), int(cfg.nm.get("m", 4))
        if cfg.nm.get("permute", True):
            pruned, report["nm_permutation"] = permute_for_nm(pruned, build_dependency_graph(pruned, example), n, m)
        apply_nm_sparsity(pruned, n, m)
    if cfg.schedule != "iterative" and cfg.finetune_steps:
        report["finetune_losses"] = tune(pruned, cfg.finetune_steps)
    if cfg.nm:
        masked = [mod for _, mod in prunable_weights(pruned) if hasattr(mod, "weight_mask")]
        masked_ok = all(is_nm_sparse(mod, n, m) for mod in masked)
        remove_masks(pruned)
        report["nm_result"] = {"n": n, "m": m, "pattern_holds_after_finetune": masked_ok, "sparsity": sparsity(pruned)}
    report["after"] = {"metric": evaluate(pruned)}
    report["after"].update(model_summary(pruned, example))
    lat = _latencies({"before": model, "after": pruned}, latency_inputs or {"val": example}, cfg.latency_repeats)
    report["latency"] = lat
    for k in ("before", "after"):
        for key, v in lat[k].items():
            report[k].setdefault(f"{key.split('_')[0]}_latency_ms", v["median_ms"])
    report["latency_ratio"] = {
        key: lat["after"][key]["median_ms"] / lat["before"][key]["median_ms"] for key in lat["after"]
    }
    report["cpu_time_ratio"] = {
        key: lat["after"][key]["median_cpu_ms"] / lat["before"][key]["median_cpu_ms"] for key in lat["after"]
    }
    report["metric_drop"] = report["before"]["metric"] - report["after"]["metric"]
    report["channel_shapes"] = channel_shapes(pruned)
    ckpt = {"state_dict": pruned.state_dict(), "channel_shapes": channel_shapes(pruned)}
    if hasattr(model, "config"):
        ckpt["config"] = model.config()
    if save_model:
        torch.save(ckpt, out_dir / "pruned.pt")
    write_json(out_dir / "report.json", report)
    plot_report(report, out_dir / "report.png")
    report["model"] = pruned
    return report
