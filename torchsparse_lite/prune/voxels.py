"""Dynamic voxel pruning of a MinkUNet: wire per-stage voxel drops, budget loss, kept-voxel statistics.

::

    model = apply_voxel_pruning(MinkUNet(4, 9, cr=0.5), stages=("stage1", "stage2"), keep=0.7, scorer="learned")
    loss = task_loss + 0.5 * voxel_budget_loss(model, 0.7)   # learned head only
    model(x); voxel_stats(model)                              # {"stage1": (kept, total), ...}

How a drop works (see :class:`~torchsparse_lite.models.MinkUNet` and
:mod:`torchsparse_lite.nn.voxel_drop`): after stage ``s``'s stride-2 conv the
lowest-importance voxels of every sample are dropped; the stage's residual
blocks, the deeper stages and the decoder stage at that stride run on the
survivors with maps built for them; that decoder output is scattered back onto
the full coordinates (dropped rows zero) before the transposed conv that needs
the stage's down-sampling map, so every input point still gets logits.

A checkpoint records the wiring as the structure kind ``"voxel_drop"``
(:func:`voxel_drop_record` / :func:`apply_voxel_drop_record`, registered in
:mod:`.structure`), so a loaded model is re-wired before the learned heads'
weights load.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..models.minkunet import ENCODER_STAGES, MinkUNet
from ..nn.voxel_drop import SCORERS, VoxelDrop, check_keep
from ..tensor import SparseTensor

Stats = dict[str, tuple[int, int]]


def _stage_list(stages: str | Sequence[str]) -> list[str]:
    names = [stages] if isinstance(stages, str) else list(stages)
    bad = [s for s in names if s not in ENCODER_STAGES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(
            f"stages must be distinct names from {ENCODER_STAGES} (the stem's stride-1 level is never dropped: "
            f"every input point needs its logits), got {stages!r}"
        )
    return names


def _per_stage(value: object, stages: list[str], name: str) -> dict[str, object]:
    """A scalar for every stage, or a mapping naming exactly ``stages``."""
    if not isinstance(value, Mapping):
        return dict.fromkeys(stages, value)
    if set(value) != set(stages):
        raise ValueError(f"{name} as a mapping must name exactly the stages {stages}, got {sorted(value)}")
    return {s: value[s] for s in stages}


def _require_minkunet(model: object) -> MinkUNet:
    if not isinstance(model, MinkUNet):
        raise TypeError(f"voxel pruning wires a MinkUNet, got {type(model).__name__}")
    return model


def stage_channels(model: MinkUNet, stage: str) -> int:
    """Channels of ``stage``'s down-sampling conv output (what its voxel drop scores)."""
    return int(getattr(model, stage)[0].conv.out_channels)


def wire_voxel_drops(model: MinkUNet, spec: Mapping[str, Mapping]) -> MinkUNet:
    """Replace ``model``'s voxel drops by ``{stage: VoxelDrop kwargs (keep, scorer, tau)}`` in place; returns it.

    An empty ``spec`` removes them (the plain, bit-identical forward).
    """
    model = _require_minkunet(model)
    if not spec:
        model.voxel_drop = None
        return model
    stages = _stage_list(list(spec))
    try:
        drops = {s: VoxelDrop(stage_channels(model, s), **dict(spec[s])) for s in stages}
    except TypeError as err:
        raise ValueError(f"voxel drop settings must be keep, scorer, tau; got {dict(spec)}: {err}") from None
    device = next(model.parameters()).device
    model.voxel_drop = nn.ModuleDict(drops).to(device).train(model.training)
    return model


def apply_voxel_pruning(
    model: MinkUNet,
    stages: str | Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
    keep: float | Mapping[str, float] = 0.5,
    scorer: str = "norm",
    *,
    tau: float = 1.0,
    inplace: bool = True,
) -> MinkUNet:
    """Drop voxels dynamically at encoder ``stages`` of a MinkUNet.

    Args:
        model: the MinkUNet (its weights are kept; drops already wired are replaced).
        stages: names from :data:`~torchsparse_lite.models.minkunet.ENCODER_STAGES`.
        keep: fraction of each sample's voxels kept at each stage, in (0, 1]
            (one value, or ``{stage: value}``); the learned head's budget.
        scorer: ``"norm"`` (feature L2 norm, works without training) or
            ``"learned"`` (a Linear(C, 1) keep head: fine-tune with :func:`voxel_budget_loss`).
        tau: temperature of the learned head's Gumbel-sigmoid straight-through mask.
        inplace: wire ``model`` itself (True) or a deep copy.

    Returns:
        The wired model (``model`` when ``inplace``).
    """
    _require_minkunet(model)
    names = _stage_list(stages)
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    keeps = {s: check_keep(k, f"keep[{s!r}]") for s, k in _per_stage(keep, names, "keep").items()}
    target = model if inplace else copy.deepcopy(model)
    return wire_voxel_drops(target, {s: {"keep": keeps[s], "scorer": scorer, "tau": tau} for s in names})


def remove_voxel_pruning(model: MinkUNet) -> MinkUNet:
    """Un-wire every voxel drop in place (learned heads are discarded); returns the model."""
    return wire_voxel_drops(model, {})


def voxel_drops(model: nn.Module) -> dict[str, VoxelDrop]:
    """``{stage: VoxelDrop}`` of a wired MinkUNet ({} for any other model or an unwired one)."""
    drops = getattr(model, "voxel_drop", None) if isinstance(model, MinkUNet) else None
    return dict(drops.items()) if drops is not None else {}


def voxel_budget_loss(model: nn.Module, target: float | Mapping[str, float] | None = None) -> torch.Tensor:
    """Mean over learned drops of ``(mean keep probability - target) ** 2``, from the last forward.

    Args:
        model: a MinkUNet with at least one ``scorer="learned"`` drop, after a forward pass.
        target: keep rate to reach (one value or ``{stage: value}``); None = each stage's ``keep``.

    Returns:
        A scalar with gradient to the keep heads (when the forward ran in training mode).
    """
    learned = {s: d for s, d in voxel_drops(model).items() if d.kind == "learned"}
    if not learned:
        raise ValueError("voxel_budget_loss needs a MinkUNet with scorer='learned' drops (apply_voxel_pruning)")
    targets = _per_stage(target, list(learned), "target") if target is not None else None
    terms = []
    for stage, drop in learned.items():
        if drop.last_keep_prob is None:
            raise ValueError(f"voxel_budget_loss: {stage!r} has not run yet; call the model on a batch first")
        goal = drop.keep if targets is None else check_keep(targets[stage], f"target[{stage!r}]")
        terms.append((drop.last_keep_prob - goal) ** 2)
    return torch.stack(terms).mean()


def voxel_stats(model: nn.Module) -> Stats:
    """``{stage: (kept, total)}`` voxels of every wired drop in the last forward pass."""
    drops = voxel_drops(model)
    if not drops:
        raise ValueError("voxel_stats: the model has no voxel drops (apply_voxel_pruning first)")
    missing = [s for s, d in drops.items() if d.last_counts is None]
    if missing:
        raise ValueError(f"voxel_stats: stages {missing} have not run yet; call the model on a batch first")
    return {s: d.last_counts for s, d in drops.items()}  # type: ignore[misc]


def mean_voxel_stats(model: nn.Module, inputs: Iterable[SparseTensor | tuple]) -> dict[str, dict[str, float]]:
    """Eval-mode forward over ``inputs`` (SparseTensors or ``(SparseTensor, labels)`` batches), no gradients.

    Returns:
        ``{stage: {"kept": mean kept, "total": mean total, "keep_ratio": sum kept / sum total}}``.
    """
    sums: dict[str, list[int]] = {}
    n = 0
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for item in inputs:
                model(item[0] if isinstance(item, tuple) else item)
                for stage, (kept, total) in voxel_stats(model).items():
                    acc = sums.setdefault(stage, [0, 0])
                    acc[0], acc[1] = acc[0] + kept, acc[1] + total
                n += 1
    finally:
        model.train(was)
    if not n:
        raise ValueError("mean_voxel_stats: inputs is empty")
    return {
        s: {"kept": k / n, "total": t / n, "keep_ratio": k / t if t else float("nan")} for s, (k, t) in sums.items()
    }


def voxel_drop_record(model: nn.Module) -> dict:
    """The checkpoint structure record: ``{stage: {"keep", "scorer", "tau"}}`` ({} when nothing is wired)."""
    return {s: d.config() for s, d in voxel_drops(model).items()}


def apply_voxel_drop_record(model: nn.Module, record: dict) -> nn.Module:
    """Re-wire a freshly built model to a saved record (before its state_dict loads); returns it."""
    if not isinstance(record, dict):
        raise ValueError(f"structure voxel_drop must be a dict of stage -> settings, got {type(record).__name__}")
    if not record:
        return model
    if not isinstance(model, MinkUNet):
        raise ValueError(f"structure voxel_drop wires MinkUNet stages, but the model is a {type(model).__name__}")
    if not all(isinstance(v, dict) for v in record.values()):
        raise ValueError(f"structure voxel_drop: every stage needs a dict of settings, got {record!r}")
    return wire_voxel_drops(model, record)
