"""The methods of the criteria comparison (``prune_criteria.py``): each prunes a copy of the base at a ratio.

:func:`prune_by` returns a :class:`Pruned`: the network to fine-tune, the training steps the method spent
beyond the others' (``extra_steps``), and ``finish``, run after the common fine-tune (2:4 masks are baked
there). ``data`` holds the batches (``train``, ``val``, ``imp``: importance batches), the traced input ``x``,
``classes`` and ``ignore``; ``args`` the script's options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from torchsparse_lite.prune import (
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
from torchsparse_lite.prune.masks import apply_nm_sparsity, remove_masks
from torchsparse_lite.prune.methods import shrunk_layers
from torchsparse_lite.prune.surgery import copy_model
from torchsparse_lite.prune.task import finetune, reinitialised, segmentation_loss

CRITERIA = ("l1", "l2", "bn", "fpgm", "taylor", "apoz", "fisher", "hessian", "thinet", "group_norm")
RECONSTRUCTED = ("l1", "thinet", "random")


def _same(model: torch.nn.Module) -> torch.nn.Module:
    return model


@dataclass
class Pruned:
    """A method's result: the pruned network, its extra training steps, what to do after the fine-tune."""

    model: torch.nn.Module
    extra_steps: int = 0
    finish: Callable[[torch.nn.Module], torch.nn.Module] = field(default=_same)


def _criterion(name: str) -> str | RandomImportance:
    """A criterion name, or the seeded random baseline for ``random-<seed>`` (``random``: seed 0)."""
    if name.startswith("random"):
        return RandomImportance(int(name.split("-")[1]) if "-" in name else 0)
    return name


def by_criterion(name: str, base, ratio: float, data: dict) -> Pruned:
    """One-shot global selection by a criterion (``+ls``: then the least-squares refit of the layers that lost
    inputs)."""
    crit_name, refit = (name[:-3], True) if name.endswith("+ls") else (name, False)
    res, plan = prune_model(base, data["x"], _criterion(crit_name), ratio, ignore=data["ignore"], batches=data["imp"],
                            loss_fn=segmentation_loss)  # fmt: skip
    if refit:
        names = shrunk_layers(plan.graph, base, res)
        reconstruct_consumers(base, res.model, names, data["imp"], 1024,
                              kept_out={n: res.kept[n]["out"] for n in names})  # fmt: skip
    return Pruned(res.model)


def _group_lasso(base, ratio: float, data: dict, args) -> Pruned:
    """Group-lasso training of a copy, then the lowest channel-group norms at ``ratio``."""
    model = copy_model(base)
    graph = build_dependency_graph(model, data["x"], data["ignore"])
    train_group_lasso(model, graph, data["train"], segmentation_loss, 0.3, args.phase_steps)
    plan = plan_pruning(model, data["x"], "group_norm", ratio, graph=graph, scores=channel_norms(model, graph))
    return Pruned(prune_groups(model, graph, plan.remove).model, args.phase_steps)


def _l0(base, ratio: float, data: dict, args) -> Pruned:
    """Hard-concrete gates trained toward ``ratio`` on a copy, folded, closed channels removed."""
    model = copy_model(base)
    graph = build_dependency_graph(model, data["x"], data["ignore"])
    gates, _ = train_l0(model, graph, data["train"], segmentation_loss, ratio, steps=args.phase_steps)
    final = gates.final()
    fold_gates(model, graph, final)
    return Pruned(prune_groups(model, graph, closed_channels(final)).model, args.phase_steps)


def _scratch(base, ratio: float, data: dict, args) -> Pruned:
    """The l1-pruned architecture at ``ratio``, re-initialised and trained for the base's steps."""
    steps = int(data["base_steps"])
    model = reinitialised(by_criterion("l1", base, ratio, data).model)
    finetune(model, data["train"], steps, lr=args.lr, progress=False, desc="scratch")
    return Pruned(model, steps)


def _nm24(base, ratio: float, data: dict, args) -> Pruned:
    """2:4 masks (by magnitude) on every conv and linear layer of the base; baked after the fine-tune."""
    model = copy_model(base)
    apply_nm_sparsity(model, 2, 4)
    return Pruned(model, 0, remove_masks)


TRAINED: dict[str, Callable[..., Pruned]] = {"group_lasso": _group_lasso, "l0": _l0, "scratch": _scratch,
                                              "nm-2:4": _nm24}  # fmt: skip
METHODS = (*CRITERIA, "random", *(f"{c}+ls" for c in RECONSTRUCTED), *TRAINED)
SMOKE_METHODS = ("l1", "thinet+ls", "l0", "scratch", "nm-2:4")


def prune_by(name: str, base, ratio: float, data: dict, args) -> Pruned:
    """Prune a copy of ``base`` with method ``name`` (a :data:`METHODS` entry or ``random-<seed>``)."""
    if name in TRAINED:
        return TRAINED[name](base, ratio, data, args)
    return by_criterion(name, base, ratio, data)
