"""The pipeline stages of the training-based and regression-based channel methods.

* :func:`configure_criterion`: the config's sample counts on the ``hessian`` / ``thinet`` criteria.
* :func:`sparsify`: the ``group_lasso``, ``l0``, ``admm`` and ``scp`` phases, each training a copy of the
  network with its penalty, gates, constraint or masks, then removing the channels it zeroed (checked: the
  pruned network equals the trained one: gates and masks folded, ADMM's weights projected).
* :func:`reconstruct_phase`: the least-squares refit of the layers that lost input channels.

Each stage fills its part of the pipeline's report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .admm import hard_prune, nm_holds, train_admm
from .config import PruneConfig
from .graph import DependencyGraph, build_dependency_graph
from .group_lasso import channel_norms, train_group_lasso, zeroed_channels
from .hessian import HessianOBD
from .l0 import closed_channels, fold_gates, train_l0
from .reconstruct import reconstruct_consumers
from .scp import train_scp
from .surgery import PruneResult, copy_model, prune_groups
from .task import Batch, segmentation_loss
from .thinet import ThiNet

Evaluate = Callable[[nn.Module], float]


def configure_criterion(crit: object, cfg: PruneConfig) -> object:
    """``crit`` with the config's ``hutchinson_samples`` / ``regression_samples`` when it uses them."""
    if isinstance(crit, HessianOBD):
        crit.samples = cfg.hutchinson_samples
    elif isinstance(crit, ThiNet):
        crit.samples = cfg.regression_samples
    return crit


def _max_diff(a: nn.Module, b: nn.Module, x: object) -> float:
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


def _kept(graph: DependencyGraph, remove: dict[int, torch.Tensor]) -> dict[str, list[int]]:
    return {g.name: [g.size, g.size - len(remove.get(g.gid, ()))] for g in graph.groups}


def _removal_record(graph: DependencyGraph, remove: dict, trained: nn.Module, pruned: nn.Module, x: object) -> dict:
    """Channels removed (fraction, per group) and the pruned-vs-trained output difference."""
    removed = sum(len(v) for v in remove.values())
    return {"removed_fraction": removed / max(graph.total_channels, 1), "kept_channels": _kept(graph, remove),
            "pruned_vs_trained_max_abs_diff": _max_diff(pruned, trained, x)}  # fmt: skip


def _every_20th(history: list[dict]) -> list[dict]:
    """About 20 rows of a per-step history, the last one included."""
    return history[:: max(1, len(history) // 20)] + history[-1:]


def _group_lasso(model: nn.Module, cfg: PruneConfig, train: Sequence[Batch], x: object, evaluate: Evaluate) -> tuple:
    """Group-lasso training of a copy, then removal of the channels at norm <= threshold."""
    opts = cfg.group_lasso
    model = copy_model(model)
    graph = build_dependency_graph(model, x, cfg.ignore)
    hist = train_group_lasso(model, graph, train, segmentation_loss, opts["strength"], opts["steps"], opts["lr"])
    rec: dict = {"history": _every_20th(hist), "after_training": {"metric": evaluate(model)}}
    if opts["threshold"] is None:
        return model, rec
    remove = zeroed_channels(channel_norms(model, graph), opts["threshold"])
    pruned = prune_groups(model, graph, remove).model
    rec.update(_removal_record(graph, remove, model, pruned, x))
    return pruned, rec


def _fold_and_remove(model: nn.Module, graph: DependencyGraph, final: dict[int, torch.Tensor], hist: list[dict],
                     ratio: float, x: object, evaluate: Evaluate) -> tuple:  # fmt: skip
    """The end of a gated phase (L0, SCP): final gates folded into the weights, the closed channels removed."""
    fold_gates(model, graph, final)
    remove = closed_channels(final)
    pruned = prune_groups(model, graph, remove).model
    rec = {"history": _every_20th(hist), "target_ratio": ratio,
           "expected_keep": hist[-1]["expected_keep"], "after_training": {"metric": evaluate(model)}}  # fmt: skip
    rec.update(_removal_record(graph, remove, model, pruned, x))
    return pruned, rec


def _l0(model: nn.Module, cfg: PruneConfig, train: Sequence[Batch], x: object, evaluate: Evaluate) -> tuple:
    """Hard-concrete gate training of a copy, gates folded, closed channels removed."""
    opts = cfg.l0
    model = copy_model(model)
    graph = build_dependency_graph(model, x, cfg.ignore)
    gates, hist = train_l0(model, graph, train, segmentation_loss, opts["ratio"], opts["strength"], opts["steps"],
                           cfg.lr, opts["lr"])  # fmt: skip
    return _fold_and_remove(model, graph, gates.final(), hist, opts["ratio"], x, evaluate)


def _admm(model: nn.Module, cfg: PruneConfig, train: Sequence[Batch], x: object, evaluate: Evaluate) -> tuple:
    """ADMM training of a copy toward the channel (and N:M) set, then projection onto it and removal."""
    opts = cfg.admm
    nm = (opts["nm"]["n"], opts["nm"]["m"]) if opts["nm"] else None
    model = copy_model(model)
    graph = build_dependency_graph(model, x, cfg.ignore)
    hist = train_admm(model, graph, train, segmentation_loss, opts["ratio"], opts["rho"], opts["steps"], opts["lr"],
                      opts["admm_every"], opts["rho_growth"], nm)  # fmt: skip
    rec = {"history": _every_20th(hist), "target_ratio": opts["ratio"], "after_training": {"metric": evaluate(model)}}
    remove = hard_prune(model, graph, opts["ratio"], nm)
    pruned = prune_groups(model, graph, remove).model
    rec["after_projection"] = {"metric": evaluate(model)}
    rec.update(_removal_record(graph, remove, model, pruned, x))
    if nm is not None:
        rec["nm_pattern_holds"] = nm_holds(pruned, nm)
    return pruned, rec


def _scp(model: nn.Module, cfg: PruneConfig, train: Sequence[Batch], x: object, evaluate: Evaluate) -> tuple:
    """Soft-mask training of a copy, the final 0 / 1 masks folded, closed channels removed."""
    opts = cfg.scp
    model = copy_model(model)
    graph = build_dependency_graph(model, x, cfg.ignore)
    masks, hist = train_scp(model, graph, train, segmentation_loss, opts["ratio"], opts["strength"], opts["steps"],
                            cfg.lr, opts["lr"], opts["temperature"])  # fmt: skip
    return _fold_and_remove(model, graph, masks.final(), hist, opts["ratio"], x, evaluate)


def sparsify(model: nn.Module, cfg: PruneConfig, train: Sequence[Batch], x: object, evaluate: Evaluate,
             report: dict) -> nn.Module:  # fmt: skip
    """The ``group_lasso``, ``l0``, ``admm`` then ``scp`` phases (those configured); returns the pruned network.

    Args:
        model: the network (not modified; each phase trains a copy).
        train: training batches; x: the example input traced for the graphs.
        evaluate: the held-out metric, recorded after each phase's training.
    """
    for key, phase in (("group_lasso", _group_lasso), ("l0", _l0), ("admm", _admm), ("scp", _scp)):
        if getattr(cfg, key):
            model, report[key] = phase(model, cfg, train, x, evaluate)
    return model


def shrunk_layers(graph: DependencyGraph, original: nn.Module, result: PruneResult) -> list[str]:
    """Conv / linear layers of ``result`` whose input channels shrank, in the traced forward order of ``graph``."""
    order = dict.fromkeys(c.name for c in graph.trace.calls if c.kind in ("conv", "linear"))
    width = {n: m.in_channels if hasattr(m, "in_channels") else m.in_features for n, m in original.named_modules()
             if n in order}  # fmt: skip
    return [n for n in order if n in result.kept and len(result.kept[n]["in"]) < width[n]]


def reconstruct_phase(original: nn.Module, result: PruneResult, graph: DependencyGraph, cfg: PruneConfig,
                      batches: Sequence[Batch], evaluate: Evaluate, report: dict) -> None:  # fmt: skip
    """Refit (in place) the layers of ``result.model`` that lost inputs to ``original``'s outputs.

    Records the metric before the refit and each layer's relative output error before / after.
    """
    names = shrunk_layers(graph, original, result)
    kept_out = {n: result.kept[n]["out"] for n in names}
    rec: dict = {"metric_without": evaluate(result.model)}
    rec["layers"] = reconstruct_consumers(original, result.model, names, batches, cfg.regression_samples,
                                          kept_out=kept_out)  # fmt: skip
    report["reconstruct"] = rec
