"""The pipeline stages of the search schedules ``amc`` and ``autoslim`` (NetAdapt's stays in the pipeline).

Each runs its search on the pipeline's data with the config's options and fills ``report["amc"]`` /
``report["autoslim"]``. A budget is a fraction of the MACs (on the first held-out input) or, with budget kind
``latency``, of the median CPU time on the first latency input with its maps built in every call, the cost
``netadapt_target`` is a fraction of (:func:`~.cost.cpu_latency`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn

from .amc import amc_search
from .autoslim import autoslim_search
from .config import PruneConfig
from .cost import cpu_latency
from .importance import Importance
from .task import Batch, finetune, segmentation_loss


class Run(Protocol):
    """What a search stage reads of the pipeline's run (:class:`~.pipeline.PruneRun`)."""

    cfg: PruneConfig
    train: list[Batch]
    latency_inputs: dict[str, object]
    progress: bool

    @property
    def example(self) -> object: ...

    @property
    def importance_batches(self) -> list[Batch]: ...

    def evaluate(self, model: nn.Module) -> float: ...


def run_latency(run: Run) -> Callable[[nn.Module], float]:
    """CPU ms on the first latency input (maps built in every call), ``latency_repeats`` interleaved runs."""
    return cpu_latency(next(iter(run.latency_inputs.values())), run.cfg.latency_repeats)


def prune_amc(run: Run, model: nn.Module, crit: Importance, report: dict) -> nn.Module:
    """AMC's DDPG search to ``amc_budget``; the best episode's model (fine-tuned later by the pipeline)."""
    cfg = run.cfg
    steps = cfg.amc_finetune_steps
    tune = (lambda m: finetune(m, run.train, steps, lr=cfg.lr, progress=False)) if steps else None
    pruned, report["amc"] = amc_search(
        model, run.example, run.evaluate, cfg.amc_budget, budget_kind=cfg.amc_budget_kind,
        latency=run_latency(run) if cfg.amc_budget_kind == "latency" else None, episodes=cfg.amc_episodes,
        warmup=cfg.amc_warmup, min_keep=cfg.amc_min_keep, seed=cfg.amc_seed, criterion=crit,
        batches=run.importance_batches, loss_fn=segmentation_loss, ignore=cfg.ignore, finetune=tune,
        progress=run.progress,
    )  # fmt: skip
    return pruned


def prune_autoslim(run: Run, model: nn.Module, crit: Importance, report: dict) -> nn.Module:
    """AutoSlim: the slimmable supernet, greedy slimming to ``autoslim_budget``, BN recalibrated."""
    cfg = run.cfg
    pruned, report["autoslim"] = autoslim_search(
        model, run.example, run.train, segmentation_loss, run.evaluate, cfg.autoslim_budget,
        budget_kind=cfg.autoslim_budget_kind,
        latency=run_latency(run) if cfg.autoslim_budget_kind == "latency" else None, steps=cfg.autoslim_steps,
        n_random=cfg.autoslim_n_random, step_fraction=cfg.autoslim_step_fraction, min_width=cfg.autoslim_min_width,
        lr=cfg.lr, distill=cfg.autoslim_distill, criterion=crit, importance_batches=run.importance_batches,
        ignore=cfg.ignore, bn_batches=cfg.importance_batches, progress=run.progress,
    )  # fmt: skip
    return pruned


SEARCHES: dict[str, Callable[[Run, nn.Module, Importance, dict], nn.Module]] = {
    "amc": prune_amc,
    "autoslim": prune_autoslim,
}
