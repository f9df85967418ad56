"""Block / layer pruning: remove whole residual blocks (and shape-preserving conv layers) from a network.

A block can go when the network still fits together without it: its output
has its input's coordinates and channels, so the block can become
``nn.Identity``. That holds for a residual block whose ``identity_shortcut``
is True (``relu(x + f(x))`` becomes ``x``: MinkUNet's
:class:`~torchsparse_lite.models.blocks.ResidualBlock` without a projection,
the detection backbone's ``SparseBasicBlock``) and for a
submanifold ``conv -> bn -> relu`` layer with as many outputs as inputs.
Removing a block removes its convs, their maps' gathers and scatters and
their share of every later map lookup: the work that channel pruning cannot
touch.

Criteria, computed on a few batches:

* ``skip``: the change of the network's output when the block alone is
  skipped, ``||f(x) - f_without(x)|| / ||f(x)||`` (one forward per block);
* ``bn``: the mean ``|gamma|`` of the block's last batch norm (the residual
  branch's output scale; Network Slimming's signal, no data needed).

The blocks removed are recorded in checkpoints as the structure kind ``blocks``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .. import nn as tsnn
from .surgery import copy_model, set_submodule

BLOCK_CRITERIA = ("skip", "bn")
Batches = Iterable[tuple[object, object]]


def _is_layer(module: nn.Module) -> bool:
    """A Sequential ``conv (submanifold, Cin == Cout), bn, relu``."""
    if not isinstance(module, nn.Sequential) or len(module) == 0 or not isinstance(module[0], tsnn.Conv3d):
        return False
    conv = module[0]
    return conv.submanifold and conv.in_channels == conv.out_channels and all(
        isinstance(m, tsnn.BatchNorm | tsnn.ReLU) for m in list(module)[1:]
    )


def removable_blocks(model: nn.Module, layers: bool = False) -> list[str]:
    """Names of the blocks that can become ``nn.Identity``: identity-shortcut residual blocks
    (and, with ``layers``, shape-preserving submanifold conv layers not inside such a block)."""
    out: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") for p in out):
            continue
        if getattr(mod, "identity_shortcut", False) is True:
            out.append(name)
        elif layers and _is_layer(mod) and not _inside_residual(model, name):
            out.append(name)
    return out


def _inside_residual(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(getattr(model.get_submodule(".".join(parts[:i])), "identity_shortcut", None) is not None
               for i in range(1, len(parts)))  # fmt: skip


def _last_bn(block: nn.Module) -> tsnn.BatchNorm | None:
    bns = [m for m in block.modules() if isinstance(m, tsnn.BatchNorm)]
    return bns[-1] if bns else None


def _output(model: nn.Module, x: object) -> torch.Tensor:
    out = model(x)
    return out.feats if hasattr(out, "feats") else out


def _relative_change(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm().clamp_min(1e-12))


def block_importance(model: nn.Module, names: list[str], criterion: str = "skip", batches: Batches = ()) -> list[float]:
    """One score per block in ``names`` (higher = more important)."""
    if criterion not in BLOCK_CRITERIA:
        raise ValueError(f"block criterion must be one of {BLOCK_CRITERIA}, got {criterion!r}")
    if criterion == "bn":
        bns = [_last_bn(model.get_submodule(n)) for n in names]
        return [float(bn.weight.detach().abs().mean()) if bn is not None and bn.affine else 1.0 for bn in bns]
    inputs = [b[0] for b in batches]
    if not inputs:
        raise ValueError("the skip block criterion needs batches of (input, target)")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = [_output(model, x) for x in inputs]
            scores = []
            for name in names:
                block = model.get_submodule(name)
                set_submodule(model, name, nn.Identity())
                try:
                    change = sum(_relative_change(_output(model, x), r) for x, r in zip(inputs, ref))
                finally:
                    set_submodule(model, name, block)
                scores.append(change / len(inputs))
    finally:
        model.train(was)
    return scores


def select_blocks(names: list[str], scores: list[float], ratio: float) -> list[str]:
    """The ``round(ratio * len(names))`` lowest-scored blocks (ties: network order)."""
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"block ratio is the fraction of removable blocks removed, in [0, 1]; got {ratio!r}")
    if len(scores) != len(names):
        raise ValueError(f"got {len(scores)} scores for {len(names)} blocks")
    n = round(ratio * len(names))
    order = sorted(range(len(names)), key=lambda i: (scores[i], i))[:n]
    return [names[i] for i in sorted(order)]


def remove_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named block by ``nn.Identity`` (in place); refuses blocks that cannot go."""
    names = list(names)
    allowed = set(removable_blocks(model, layers=True))
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"blocks {bad} cannot be removed: only identity-shortcut residual blocks and "
                         "shape-preserving submanifold conv layers can become nn.Identity")  # fmt: skip
    for name in names:
        set_submodule(model, name, nn.Identity())
    return model


def removed_blocks(model: nn.Module) -> list[str]:
    """Names of blocks replaced by :func:`remove_blocks` (the checkpoint's ``blocks`` record)."""
    return list(getattr(model, "_removed_blocks", []))


def apply_removed_blocks(model: nn.Module, names: list[str]) -> nn.Module:
    """Remove the saved blocks from a freshly built model (the checkpoint loader's applier)."""
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"structure blocks names {name!r}, which the model does not have") from None
    return mark_removed(remove_blocks(model, names), names)


def mark_removed(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Record removed block names on the model (kept by ``copy.deepcopy``; read by :func:`removed_blocks`)."""
    model._removed_blocks = sorted({*removed_blocks(model), *names})  # noqa: SLF001 - our own bookkeeping
    return model


@dataclass
class BlockPruneResult:
    """What :func:`prune_blocks` did: the pruned copy, the candidates, their scores and the removed blocks."""

    model: nn.Module
    candidates: list[str]
    scores: list[float]
    removed: list[str]


def prune_blocks(
    model: nn.Module, ratio: float, criterion: str = "skip", batches: Batches = (), layers: bool = False
) -> BlockPruneResult:
    """Score the removable blocks of a copy of ``model`` and remove the ``ratio`` least important."""
    pruned = copy_model(model)
    names = removable_blocks(pruned, layers)
    scores = block_importance(pruned, names, criterion, list(batches))
    chosen = select_blocks(names, scores, ratio)
    mark_removed(remove_blocks(pruned, chosen), chosen)
    return BlockPruneResult(pruned, names, scores, chosen)
