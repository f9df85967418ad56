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

from torchsparse_lite.models.stats import count_macs
from torchsparse_lite.prune import (
    RandomImportance,
    amc_search,
    autoslim_search,
    build_dependency_graph,
    channel_norms,
    netadapt_search,
    plan_pruning,
    prune_groups,
    prune_model,
    reconstruct_consumers,
)
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.masks import apply_nm_sparsity, remove_masks
from torchsparse_lite.prune.methods import shrunk_layers, sparsify
from torchsparse_lite.prune.report import fresh_input
from torchsparse_lite.prune.surgery import copy_model
from torchsparse_lite.prune.task import finetune, miou, reinitialised, segmentation_loss

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


def _phase(key: str, opts: dict, base, data: dict, args) -> torch.nn.Module:
    """The prune pipeline's training phase ``key`` (``group_lasso`` / ``l0`` / ``admm`` / ``scp``) on a copy."""
    cfg = PruneConfig(ignore=list(data["ignore"]), lr=args.finetune_lr, **{key: {"steps": args.phase_steps, **opts}})
    return sparsify(base, cfg, data["train"], data["x"], _search_metric(data), {})


def _group_lasso(base, ratio: float, data: dict, args) -> Pruned:
    """Group-lasso training of a copy (no threshold), then the lowest channel-group norms at ``ratio``."""
    model = _phase("group_lasso", {"strength": 0.3, "threshold": None}, base, data, args)
    graph = build_dependency_graph(model, data["x"], data["ignore"])
    plan = plan_pruning(model, data["x"], "group_norm", ratio, graph=graph, scores=channel_norms(model, graph))
    return Pruned(prune_groups(model, graph, plan.remove).model, args.phase_steps)


def _trained_to(key: str) -> Callable[..., Pruned]:
    """A method that trains phase ``key`` toward removing ``ratio`` of the channels (L0, ADMM, SCP)."""

    def method(base, ratio: float, data: dict, args) -> Pruned:
        opts = {"ratio": ratio}
        if key == "admm":  # ten Z / U updates, the weights at the rate the other phases use
            opts.update(admm_every=max(1, args.phase_steps // 10), lr=args.finetune_lr)
        return Pruned(_phase(key, opts, base, data, args), args.phase_steps)

    method.__doc__ = f"The ``{key}`` phase of the prune pipeline toward ``ratio``, its channels removed."
    return method


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


def mac_budget(base, ratio: float, data: dict) -> float:
    """The searches' budget: the MACs of the l1-pruned network at ``ratio`` as a fraction of the base's."""
    cache = data.setdefault("mac_budgets", {})
    if ratio not in cache:
        x = fresh_input(data["x"])
        cache[ratio] = count_macs(by_criterion("l1", base, ratio, data).model, x) / count_macs(base, fresh_input(x))
    return cache[ratio]


def _search_metric(data: dict) -> Callable[[torch.nn.Module], float]:
    """mIoU on the search scans (held out from training and from the reported validation)."""
    return lambda m: miou(m, data["search"], data["classes"])


def _amc(base, ratio: float, data: dict, args) -> Pruned:
    """AMC's DDPG agent under the MAC budget of :func:`mac_budget` (``--search-episodes``, a tenth warm-up)."""
    model, _ = amc_search(base, data["x"], _search_metric(data), mac_budget(base, ratio, data),
                          episodes=args.search_episodes, warmup=max(1, args.search_episodes // 10),
                          ignore=data["ignore"], progress=False)  # fmt: skip
    return Pruned(model)


def _autoslim(base, ratio: float, data: dict, args) -> Pruned:
    """A slimmable supernet trained ``--phase-steps`` sandwich steps, slimmed greedily to the MAC budget
    (``--slim-step`` of a group per greedy step)."""
    model, _ = autoslim_search(base, data["x"], data["train"], segmentation_loss, _search_metric(data),
                               mac_budget(base, ratio, data), steps=args.phase_steps, step_fraction=args.slim_step,
                               lr=args.finetune_lr, importance_batches=data["imp"], ignore=data["ignore"],
                               progress=False)  # fmt: skip
    return Pruned(model, args.phase_steps)


def _netadapt(base, ratio: float, data: dict, args) -> Pruned:
    """NetAdapt with MACs as its cost, down to the MAC budget (half of one group per step)."""
    x = fresh_input(data["x"])
    model, _ = netadapt_search(base, data["x"], lambda m: float(count_macs(m, fresh_input(x))), _search_metric(data),
                               mac_budget(base, ratio, data), step_fraction=0.5, ignore=data["ignore"],
                               max_iters=1000, progress=False)  # fmt: skip
    return Pruned(model)


TRAINED: dict[str, Callable[..., Pruned]] = {"group_lasso": _group_lasso, "l0": _trained_to("l0"),
                                              "admm": _trained_to("admm"), "scp": _trained_to("scp"), "amc": _amc,
                                              "autoslim": _autoslim, "netadapt": _netadapt, "scratch": _scratch,
                                              "nm-2:4": _nm24}  # fmt: skip
METHODS = (*CRITERIA, "random", *(f"{c}+ls" for c in RECONSTRUCTED), *TRAINED)
# AutoSlim's greedy slimming scores O(groups^2) candidates (a minute even at smoke size) and NetAdapt's search
# more: tests/test_prune_autoslim.py, test_prune_amc.py and test_prune_schedule.py cover them on small networks
SMOKE_METHODS = ("l1", "thinet+ls", "group_lasso", "l0", "admm", "scp", "amc", "scratch", "nm-2:4")


def prune_by(name: str, base, ratio: float, data: dict, args) -> Pruned:
    """Prune a copy of ``base`` with method ``name`` (a :data:`METHODS` entry or ``random-<seed>``)."""
    if name in TRAINED:
        return TRAINED[name](base, ratio, data, args)
    return by_criterion(name, base, ratio, data)
