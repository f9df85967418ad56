"""The full pruning run behind the CLI and the benchmark: analyse, prune, fine-tune, measure, report.

:func:`run_pipeline` runs these stages in order, each filling its part of the report:
baseline (+ Network Slimming) -> residual blocks -> group-lasso / L0 / ADMM / SCP phases -> sensitivity scan ->
channel pruning by schedule (+ least-squares reconstruction) -> kernel taps -> voxel drops -> N:M masks and
fine-tuning -> measurement -> files.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..train.checkpoint import load_checkpoint, save_checkpoint
from .blocks import prune_blocks
from .config import SEARCH_SCHEDULES, PruneConfig
from .graph import DependencyGraph, build_dependency_graph
from .importance import Importance, Scores, bn_l1_penalty, get_criterion
from .masks import apply_nm_sparsity, is_nm_sparse, prunable_weights, remove_masks, sparsity
from .methods import configure_criterion, reconstruct_phase, sparsify
from .netadapt import netadapt_search
from .permute import permute_for_nm
from .report import compare_latency, model_summary, plot_report, write_json
from .schedule import iterative_prune, plot_sensitivity, ratios_for_drop, sensitivity_analysis
from .search import SEARCHES, run_latency
from .structured import masked_model, prune_model
from .surgery import channel_shapes, copy_model
from .taps import prune_taps
from .task import Batch, finetune, miou, segmentation_loss
from .voxels import apply_voxel_pruning, mean_voxel_stats, voxel_budget_loss, voxel_drops

__all__ = ["PruneConfig", "PruneRun", "run_pipeline"]


@dataclass
class PruneRun:
    """What the stages of one run share: options, data, metric, output folder."""

    cfg: PruneConfig
    train: list[Batch]
    val: list[Batch]
    num_classes: int
    out_dir: Path
    latency_inputs: dict[str, object]
    progress: bool = True
    checkpoint_fields: dict | None = None

    @property
    def example(self) -> object:
        """The first held-out input: traced for the graph and used for sizes and MACs."""
        return self.val[0][0]

    @property
    def importance_batches(self) -> list[Batch]:
        return self.train[: self.cfg.importance_batches]

    @property
    def select_kw(self) -> dict:
        return {"normalize": self.cfg.normalize, "max_ratio": self.cfg.max_ratio, "round_to": self.cfg.round_to}

    def evaluate(self, model: nn.Module) -> float:
        """Voxel mIoU (%) on the held-out batches."""
        return miou(model, self.val, self.num_classes)

    def tune(self, model: nn.Module, steps: int, desc: str = "fine-tune", penalty: float = 0.0) -> list[float]:
        """Fine-tune in place on the training batches (with an L1 penalty on BN gammas when ``penalty`` > 0,
        and the voxel budget loss when the model has learned voxel drops)."""
        terms = []
        if penalty > 0:
            terms.append(lambda mm: bn_l1_penalty(mm, penalty))
        vox = self.cfg.voxels
        if vox and vox["scorer"] == "learned" and vox["budget_weight"] > 0 and voxel_drops(model):
            terms.append(lambda mm: vox["budget_weight"] * voxel_budget_loss(mm))
        extra = (lambda mm: sum(t(mm) for t in terms)) if terms else None
        return finetune(model, self.train, steps, lr=self.cfg.lr, progress=self.progress, desc=desc, extra_loss=extra)


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
    checkpoint_fields: dict | None = None,
) -> dict:
    """Prune ``model`` as ``cfg`` says and write ``report.json`` + PNGs into ``out_dir``.

    Args:
        model: the network (not modified; a copy is pruned).
        cfg: the run's options.
        train: batches ``(SparseTensor [M, C], labels [M])`` for data-driven criteria and fine-tuning.
        val: held-out batches for the metric (voxel mIoU, %); the first input is traced.
        num_classes: classes of the labels.
        latency_inputs: name -> SparseTensor timed for both models (default: the first val input).
        save_model: also write ``pruned.pt``, a checkpoint of :mod:`torchsparse_lite.train.checkpoint`'s format
            (model config + structure + weights; ``model`` needs a ``config()``).
        checkpoint_fields: what else ``pruned.pt`` records: ``data`` settings, ``epoch``, ``step``, ... of the
            source checkpoint (default: none known).

    Returns:
        The report dict (also written to ``out_dir/report.json``) plus ``"model"``: the pruned network.
    """
    if not isinstance(cfg, PruneConfig):
        raise TypeError(f"cfg must be a PruneConfig, got {type(cfg).__name__}")
    if not val or not train:
        raise ValueError(f"train and val need at least one batch each, got {len(train)} and {len(val)}")
    run = PruneRun(cfg, train, val, num_classes, Path(out_dir), latency_inputs or {"val": val[0][0]}, progress,
                   checkpoint_fields)  # fmt: skip
    run.out_dir.mkdir(parents=True, exist_ok=True)
    model = copy_model(model).eval()
    report: dict = {"config": cfg.__dict__.copy()}
    _baseline(run, model, report)
    start = _prune_blocks(run, model, report)
    start = sparsify(start, cfg, run.train, run.example, run.evaluate, report)
    graph = build_dependency_graph(start, run.example, cfg.ignore)
    crit = configure_criterion(get_criterion(cfg.criterion), cfg)
    scores = _sensitivity(run, start, graph, crit, report)
    pruned = _prune(run, start, graph, crit, scores, report) if cfg.ratio or cfg.schedule in SEARCH_SCHEDULES else start
    pruned = _prune_taps(run, pruned, report)
    pruned = _prune_voxels(run, pruned, report)
    report["pruned_no_finetune"] = {"metric": run.evaluate(pruned)}
    pruned = _nm_and_finetune(run, pruned, report)
    if cfg.voxels:
        report["voxels"]["after"] = mean_voxel_stats(pruned, run.val)
    _measure(run, model, pruned, report)
    _write(run, model, pruned, report, save_model)
    report["model"] = pruned
    return report


def _baseline(run: PruneRun, model: nn.Module, report: dict) -> None:
    """Metric, size and MACs before pruning; then Network Slimming (in place) when asked for."""
    cfg = run.cfg
    report["before"] = {"metric": run.evaluate(model)}
    report["before"].update(model_summary(model, run.example))
    if cfg.slimming_steps:  # Network Slimming: train with an L1 penalty on BN gammas first
        report["slimming_losses"] = run.tune(model, cfg.slimming_steps, "slimming", cfg.bn_penalty or 1e-4)
        report["after_slimming"] = {"metric": run.evaluate(model)}


def _prune_blocks(run: PruneRun, model: nn.Module, report: dict) -> nn.Module:
    """Remove whole residual blocks first (``cfg.blocks``); the channel graph is then built on what is left."""
    opts = run.cfg.blocks
    if not opts:
        return model
    res = prune_blocks(model, opts["ratio"], opts["criterion"], run.importance_batches, opts["layers"])
    report["blocks"] = {"candidates": res.candidates, "scores": res.scores, "removed": res.removed}
    return res.model


def _prune_taps(run: PruneRun, model: nn.Module, report: dict) -> nn.Module:
    """Remove kernel offsets after the channels (``cfg.taps``), sharing taps across convs that share a map."""
    opts = run.cfg.taps
    if not opts:
        return model
    res = prune_taps(model, run.example, opts["ratio"], opts["criterion"], opts["scope"], run.importance_batches,
                     segmentation_loss, run.cfg.ignore, opts["strided"])  # fmt: skip
    before, after = res.map_entries()
    report["taps"] = {"kept": {g: list(k) for g, k in res.kept.items()}, "map_entries": [before, after],
                      "map_entries_ratio": after / before if before else 1.0}  # fmt: skip
    return res.model


def _prune_voxels(run: PruneRun, model: nn.Module, report: dict) -> nn.Module:
    """Wire dynamic voxel drops into (a copy of) a MinkUNet last (``cfg.voxels``); fine-tuned with its budget."""
    opts = run.cfg.voxels
    if not opts:
        return model
    wired = apply_voxel_pruning(model, opts["stages"], opts["keep"], opts["scorer"], inplace=False)
    report["voxels"] = {"before_finetune": mean_voxel_stats(wired, run.val)}
    return wired


def _sensitivity(
    run: PruneRun, model: nn.Module, graph: DependencyGraph, crit: Importance, report: dict
) -> Scores | None:
    """The per-group sensitivity scan (with ``max_drop``: the derived ratios); returns the scores it used."""
    cfg = run.cfg
    if not cfg.sensitivity:
        return None
    scores = crit(model, graph, run.importance_batches, segmentation_loss)
    sens = sensitivity_analysis(model, graph, scores, run.evaluate, cfg.sensitivity_ratios, run.progress)
    plot_sensitivity(sens, str(run.out_dir / "sensitivity.png"))
    report["sensitivity"] = sens
    if cfg.max_drop is not None:
        report["derived_ratios"] = ratios_for_drop(sens, cfg.max_drop)
    return scores


def _prune(
    run: PruneRun, model: nn.Module, graph: DependencyGraph, crit: Importance, scores: Scores | None, report: dict
) -> nn.Module:
    """Remove channels by the configured schedule; records ``kept_channels`` per group."""
    ratio: float | dict = report.get("derived_ratios", float(run.cfg.ratio))
    if run.cfg.schedule == "oneshot":
        return _prune_oneshot(run, model, graph, crit, scores, ratio, report)
    if run.cfg.schedule == "iterative":
        pruned = _prune_iterative(run, model, crit, ratio, report)
    elif run.cfg.schedule == "netadapt":
        pruned = _prune_netadapt(run, model, crit, report)
    else:  # amc, autoslim (:mod:`.search`)
        pruned = SEARCHES[run.cfg.schedule](run, model, crit, report)
    after = {g.name: g.size for g in build_dependency_graph(pruned, run.example, run.cfg.ignore).groups}
    report["kept_channels"] = {g.name: [g.size, after.get(g.name, g.size)] for g in graph.groups}
    return pruned


def _prune_oneshot(
    run: PruneRun,
    model: nn.Module,
    graph: DependencyGraph,
    crit: Importance,
    scores: Scores | None,
    ratio: float | dict,
    report: dict,
) -> nn.Module:
    """One :func:`~.structured.prune_model` call (per-group ratios select locally); checked against masking."""
    mode = "local" if isinstance(ratio, dict) else run.cfg.mode
    res, plan = prune_model(
        model, run.example, crit, ratio, mode=mode, batches=run.importance_batches, loss_fn=segmentation_loss,
        graph=graph, scores=scores, **run.select_kw,
    )  # fmt: skip
    with torch.no_grad():
        diff = (res.model(run.example) - masked_model(model, plan)(run.example)).abs().max()
    report["pruned_vs_masked_max_abs_diff"] = float(diff)
    report["kept_channels"] = plan.kept_channels()
    if run.cfg.reconstructs:  # least-squares refit of the layers that lost inputs (ThiNet / He et al.)
        reconstruct_phase(model, res, graph, run.cfg, run.importance_batches, run.evaluate, report)
    return res.model


def _prune_iterative(run: PruneRun, model: nn.Module, crit: Importance, ratio: float | dict, report: dict) -> nn.Module:
    """Cubic schedule over ``steps`` prune + fine-tune rounds (per-group ratios follow one schedule each)."""
    cfg = run.cfg
    per_step = max(1, cfg.finetune_steps // max(cfg.steps, 1))
    res = iterative_prune(
        model, run.example, ratio, cfg.steps, criterion=crit, ignore=cfg.ignore,
        finetune=lambda m: run.tune(m, per_step, desc="fine-tune step"), evaluate=run.evaluate,
        batches=run.importance_batches, loss_fn=segmentation_loss,
        rewind_state=_rewind_state(model, cfg.rewind), progress=run.progress, **run.select_kw,
    )  # fmt: skip
    report["iterative"] = res.history
    return res.model


def _prune_netadapt(run: PruneRun, model: nn.Module, crit: Importance, report: dict) -> nn.Module:
    """NetAdapt search down to ``netadapt_target`` of the measured CPU time on the first latency input."""
    cfg = run.cfg
    pruned, report["netadapt"] = netadapt_search(
        model, run.example, run_latency(run), run.evaluate, cfg.netadapt_target, step_fraction=cfg.netadapt_step,
        criterion=crit, ignore=cfg.ignore, max_iters=cfg.netadapt_iters, progress=run.progress,
    )  # fmt: skip
    return pruned


def _rewind_state(model: nn.Module, rewind: bool | str) -> dict | None:
    """Weights to rewind to: none, the unpruned model's (True), or a checkpoint's (early-training path)."""
    if not rewind:
        return None
    if isinstance(rewind, str):
        return load_checkpoint(rewind)["state_dict"]
    return copy.deepcopy(model.state_dict())


def _nm_and_finetune(run: PruneRun, pruned: nn.Module, report: dict) -> nn.Module:
    """N:M masks (optionally after a channel permutation), fine-tuning with the masks held, then baked."""
    cfg = run.cfg
    nm = cfg.nm_pattern
    if nm is not None:
        n, m = nm
        if cfg.nm.get("permute", True):
            pruned, report["nm_permutation"] = permute_for_nm(pruned, build_dependency_graph(pruned, run.example), n, m)
        apply_nm_sparsity(pruned, n, m)
    if cfg.schedule != "iterative" and cfg.finetune_steps:
        report["finetune_losses"] = run.tune(pruned, cfg.finetune_steps)
    if nm is not None:
        masked = [mod for _, mod in prunable_weights(pruned) if hasattr(mod, "weight_mask")]
        masked_ok = all(is_nm_sparse(mod, n, m) for mod in masked)
        remove_masks(pruned)
        report["nm_result"] = {"n": n, "m": m, "pattern_holds_after_finetune": masked_ok, "sparsity": sparsity(pruned)}
    return pruned


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


def _measure(run: PruneRun, model: nn.Module, pruned: nn.Module, report: dict) -> None:
    """Metric, size and MACs after pruning; latency of both models interleaved on every latency input."""
    report["after"] = {"metric": run.evaluate(pruned)}
    report["after"].update(model_summary(pruned, run.example))
    lat = _latencies({"before": model, "after": pruned}, run.latency_inputs, run.cfg.latency_repeats)
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


def _write(run: PruneRun, model: nn.Module, pruned: nn.Module, report: dict, save_model: bool) -> None:
    """``pruned.pt`` (when ``save_model``), ``report.json`` and ``report.png`` under the output folder."""
    report["channel_shapes"] = channel_shapes(pruned)
    if save_model:
        fields = {"data": {}, **(run.checkpoint_fields or {}), "prune_config": run.cfg.__dict__.copy()}
        save_checkpoint(run.out_dir / "pruned.pt", pruned, task="segmentation", **fields)
    write_json(run.out_dir / "report.json", report)
    plot_report(report, run.out_dir / "report.png")
