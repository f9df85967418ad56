"""Kernel-offset (tap) pruning: drop whole taps of sparse convs, so their maps are never built.

A tap of a sparse conv costs what channels cannot save: its map search, its
gather, its GEMM and its scatter. Removing tap ``k`` of a conv removes its
weight slice ``W[k]`` [Cin, Cout] *and* its share of the kernel map, so the
latency falls with the map entries removed ("Not All Neighbors Matter",
AAAI'23, prunes taps of 3D sparse convs).

Dependencies: convs that share one kernel map (every submanifold conv of one
tensor, a strided conv and the transposed conv that reuses its map) must keep
the same taps, or the map is built twice (and a transposed conv would not find
its down-sampling map at all). :func:`tap_groups` finds those groups by
running the model once. A submanifold group keeps its centre tap (its map is
the identity: no search, no gather) and drops mirror pairs ``(d, -d)``
together, so the kept kernel stays symmetric and its map is still searched
for one half only.

Criteria (per tap, summed over a group's convs and the given batches):
``magnitude`` ||W[k]||, ``taylor`` |sum W[k] * dL/dW[k]|, ``contribution``
||feats[in_k] @ W[k]|| (exactly the change of the conv's output when the tap
is dropped). Scores are normalised per group (fractions of the group's
total), so one global threshold compares layers of different scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from .. import nn as tsnn
from ..tensor import SparseTensor
from .importance import run_batches
from .masks import prunable_weights
from .surgery import copy_model

TAP_CRITERIA = ("magnitude", "taylor", "contribution")
TAP_SCOPES = ("global", "layer")
Batches = Iterable[tuple[object, object]]


@dataclass(frozen=True)
class TapGroup:
    """Convs sharing one kernel map, and what each of their current taps costs.

    Attributes:
        convs: module names.
        taps: the convs' current full-box tap indices (weight row ``j`` is tap ``taps[j]``).
        pairs: map entries of each current tap on the sample (the work it costs).
        macs_per_pair: sum of ``Cin * Cout`` over the convs (MACs of one map entry).
        fixed: positions never dropped (a submanifold conv's centre tap).
        mirror: position of each tap's mirror tap when the group drops pairs together, else None.
    """

    convs: tuple[str, ...]
    taps: tuple[int, ...]
    pairs: tuple[int, ...]
    macs_per_pair: int
    fixed: tuple[int, ...] = ()
    mirror: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return self.convs[0]


def _taps(conv: tsnn.Conv3d) -> tuple[int, ...]:
    return conv.taps if conv.taps is not None else tuple(range(int(torch.tensor(conv.kernel_size).prod())))


def _map_key(conv: tsnn.Conv3d, kmap) -> tuple:
    """Identifies a map up to direction: the coordinate tensors it joins and the conv's taps."""
    ends = frozenset((kmap.in_coords.data_ptr(), kmap.out_coords.data_ptr()))
    return ends, conv.kernel_size, conv.stride, conv.dilation, conv.padding, conv.taps


def tap_groups(
    model: nn.Module, x: SparseTensor, exclude: Iterable[str] = (), strided: bool = False
) -> list[TapGroup]:
    """Run ``model(x)`` once and group its ``Conv3d`` layers (kernel volume > 1) by the map they use.

    Only submanifold convs are candidates unless ``strided``: a strided conv's
    output set is the sites its taps reach, so dropping a tap of a tiling
    down-sampling conv (k = s = 2) silently discards every input voxel at that
    window position (and the coarse voxels only they produced) — voxel
    dropping by another name, not a cheaper kernel.
    """
    seen: dict[tuple, list[tuple[str, tsnn.Conv3d, tuple[int, ...]]]] = {}

    def make_hook(name: str):
        def hook(module: tsnn.Conv3d, args: tuple, output: object) -> None:
            kmap = module.kernel_map(args[0])
            seen.setdefault(_map_key(module, kmap), []).append((name, module, tuple(kmap.counts)))

        return hook

    convs = [(n, m) for n, m in prunable_weights(model, exclude) if isinstance(m, tsnn.Conv3d) and m.kernel_volume > 1]
    handles = [m.register_forward_hook(make_hook(n)) for n, m in convs]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    groups = [_group(members) for members in seen.values()]
    return [g for g in groups if strided or all(model.get_submodule(c).submanifold for c in g.convs)]


def _group(members: list[tuple[str, tsnn.Conv3d, tuple[int, ...]]]) -> TapGroup:
    convs = {n: m for n, m, _ in members}  # a conv run twice (shared weights) counts once
    _, conv, counts = members[0]
    taps = _taps(conv)
    names = tuple(convs)
    macs = sum(m.in_channels * m.out_channels for m in convs.values())
    if not (conv.submanifold and conv.geometry.symmetric):
        return TapGroup(names, taps, counts, macs)
    centre = len(taps) // 2
    return TapGroup(names, taps, counts, macs, (centre,), tuple(len(taps) - 1 - j for j in range(len(taps))))


# ---------------------------------------------------------------- scores
def _conv(model: nn.Module, name: str) -> tsnn.Conv3d:
    return model.get_submodule(name)


def _weight(conv: tsnn.Conv3d) -> torch.Tensor:
    """The effective weight (a masked conv's ``weight`` is ``weight_orig * weight_mask``)."""
    return conv.weight


def _magnitude(model: nn.Module, groups: list[TapGroup]) -> list[torch.Tensor]:
    return [sum(_weight(_conv(model, n)).detach().square().sum(dim=(1, 2)) for n in g.convs).sqrt() for g in groups]


def _taylor(model: nn.Module, groups: list[TapGroup], batches: Batches, loss_fn: Callable | None) -> list[torch.Tensor]:
    acc = [torch.zeros(len(g.taps)) for g in groups]
    params = {n: _conv(model, n).weight for g in groups for n in g.convs}
    was = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)

    def hooks(i: int, name: str):
        def on_grad(grad: torch.Tensor) -> None:
            acc[i] += (params[name].detach() * grad).sum(dim=(1, 2)).abs().cpu()

        return params[name].register_hook(on_grad)

    handles = [hooks(i, n) for i, g in enumerate(groups) for n in g.convs]
    try:
        run_batches(model, batches, loss_fn, backward=True)
    finally:
        for h in handles:
            h.remove()
        for n, p in params.items():
            p.requires_grad_(was[n])
        model.zero_grad(set_to_none=True)
    return acc


def _contribution(model: nn.Module, groups: list[TapGroup], batches: Batches) -> list[torch.Tensor]:
    acc = [torch.zeros(len(g.taps)) for g in groups]

    def make_hook(i: int):
        def hook(module: tsnn.Conv3d, args: tuple, output: object) -> None:
            x, kmap, w = args[0], module.kernel_map(args[0]), _weight(module).detach()
            for j, (s, e) in enumerate(kmap.bounds):
                if e > s:
                    acc[i][j] += float((x.feats.detach().index_select(0, kmap.in_idx[s:e]) @ w[j]).square().sum())

        return hook

    handles = [_conv(model, n).register_forward_hook(make_hook(i)) for i, g in enumerate(groups) for n in g.convs]
    try:
        run_batches(model, batches, None, backward=False)
    finally:
        for h in handles:
            h.remove()
    return [a.sqrt() for a in acc]


def tap_importance(
    model: nn.Module,
    groups: list[TapGroup],
    criterion: str = "magnitude",
    batches: Batches = (),
    loss_fn: Callable | None = None,
) -> list[torch.Tensor]:
    """Per group, a [len(taps)] score of each current tap, normalised to sum to 1 within the group."""
    if criterion not in TAP_CRITERIA:
        raise ValueError(f"tap criterion must be one of {TAP_CRITERIA}, got {criterion!r}")
    if criterion == "magnitude":
        raw = _magnitude(model, groups)
    elif criterion == "taylor":
        raw = _taylor(model, groups, list(batches), loss_fn)
    else:
        raw = _contribution(model, groups, list(batches))
    return [r / r.sum() if float(r.sum()) > 0 else torch.full_like(r, 1.0 / len(r)) for r in raw]


# ------------------------------------------------------------- selection
def _units(group: TapGroup) -> list[tuple[int, ...]]:
    """Droppable units of a group: single taps, or mirror pairs; fixed taps are never units."""
    out, done = [], set(group.fixed)
    for j in range(len(group.taps)):
        if j in done:
            continue
        unit = (j,) if group.mirror is None else tuple(sorted({j, group.mirror[j]}))
        done.update(unit)
        out.append(unit)
    return out


def select_taps(
    groups: list[TapGroup], scores: list[torch.Tensor], ratio: float, scope: str = "global"
) -> dict[str, tuple[int, ...]]:
    """Kept full-box taps per group (keyed by group name) after removing ``ratio`` of the map MACs.

    ``ratio`` is the fraction of the groups' map work (pairs x Cin x Cout) to
    remove: lowest-scored units first, across all groups (``"global"``) or
    within each group (``"layer"``). A group always keeps its fixed taps and
    at least one droppable unit.
    """
    if not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"tap ratio is the fraction of map work removed, in [0, 1); got {ratio!r}")
    if scope not in TAP_SCOPES:
        raise ValueError(f"tap scope must be one of {TAP_SCOPES}, got {scope!r}")
    if len(scores) != len(groups):
        raise ValueError(f"got {len(scores)} score vectors for {len(groups)} tap groups")
    cands = []  # (score, group index, unit, cost)
    for gi, (g, sc) in enumerate(zip(groups, scores)):
        for unit in _units(g):
            cands.append((float(sum(sc[j] for j in unit)), gi, unit, sum(g.pairs[j] for j in unit) * g.macs_per_pair))
    removed: list[set[int]] = [set() for _ in groups]
    left = [len(_units(g)) for g in groups]
    budgets = [ratio * sum(g.pairs) * g.macs_per_pair for g in groups]
    total = sum(budgets)
    spent = [0.0 for _ in groups]
    for _, gi, unit, cost in sorted(cands, key=lambda c: (c[0], c[1], c[2])):
        if left[gi] <= 1 or (scope == "layer" and spent[gi] >= budgets[gi]):
            continue
        if scope == "global" and sum(spent) >= total:
            break
        removed[gi].update(unit)
        left[gi] -= 1
        spent[gi] += cost
    return {g.name: tuple(t for j, t in enumerate(g.taps) if j not in removed[gi]) for gi, g in enumerate(groups)}


# ------------------------------------------------------- masks and surgery
def _positions(conv: tsnn.Conv3d, kept: tuple[int, ...]) -> list[int]:
    current = _taps(conv)
    missing = sorted(set(kept) - set(current))
    if missing:
        raise ValueError(f"taps {missing} are not taps of this conv (it has {list(current)})")
    return [current.index(t) for t in kept]


def mask_taps(model: nn.Module, groups: list[TapGroup], kept: dict[str, tuple[int, ...]]) -> nn.Module:
    """Zero the dropped taps with pruning masks (in place; for fine-tuning before :func:`remove_taps`)."""
    for g in groups:
        for name in g.convs:
            conv = _conv(model, name)
            mask = torch.zeros(conv.weight.shape[0], 1, 1, device=conv.weight.device)
            mask[_positions(conv, kept[g.name])] = 1.0
            tprune.custom_from_mask(conv, "weight", mask.expand_as(conv.weight).contiguous())
    return model


def set_taps(conv: tsnn.Conv3d, kept: tuple[int, ...], weight: torch.Tensor | None = None) -> None:
    """Make ``conv`` hold only taps ``kept`` (full-box indices): geometry, and weight rows (given or sliced)."""
    if hasattr(conv, "weight_orig"):
        tprune.remove(conv, "weight")  # bake a mask first
    pos = _positions(conv, kept)
    full = int(torch.tensor(conv.kernel_size).prod())
    new = conv.weight.detach()[pos].clone() if weight is None else weight
    conv.geometry = replace(conv.geometry, offsets_subset=None if len(kept) == full else tuple(kept))
    conv.weight = nn.Parameter(new, requires_grad=conv.weight.requires_grad)


def remove_taps(model: nn.Module, groups: list[TapGroup], kept: dict[str, tuple[int, ...]]) -> nn.Module:
    """Physically drop the taps not in ``kept`` from every conv of every group (in place)."""
    for g in groups:
        if g.name not in kept:
            raise ValueError(f"no kept taps given for tap group {g.name!r}")
        for name in g.convs:
            set_taps(_conv(model, name), kept[g.name])
    return model


def tap_structure(model: nn.Module) -> dict[str, list[int]]:
    """``{conv name: kept full-box taps}`` of every conv holding a tap subset (a checkpoint's ``taps`` record)."""
    return {n: list(m.taps) for n, m in model.named_modules() if isinstance(m, tsnn.Conv3d) and m.taps is not None}


def apply_tap_structure(model: nn.Module, record: dict[str, list[int]]) -> nn.Module:
    """Give a freshly built ``model``'s convs the saved tap subsets (weights are loaded afterwards)."""
    for name, kept in record.items():
        try:
            conv = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"structure taps names {name!r}, which the model does not have") from None
        if not isinstance(conv, tsnn.Conv3d):
            raise ValueError(f"structure taps names {name!r}, a {type(conv).__name__}, not a Conv3d")
        kept = tuple(int(t) for t in kept)
        set_taps(conv, kept, conv.weight.detach()[_positions(conv, kept)].clone())
    return model


@dataclass
class TapPruneResult:
    """What :func:`prune_taps` did: the pruned copy, the groups, their scores and the kept taps."""

    model: nn.Module
    groups: list[TapGroup]
    scores: list[torch.Tensor]
    kept: dict[str, tuple[int, ...]]

    def map_entries(self) -> tuple[int, int]:
        """(map entries before, after) over the groups on the sample, each group counted once."""
        before = sum(sum(g.pairs) for g in self.groups)
        after = sum(sum(p for t, p in zip(g.taps, g.pairs) if t in self.kept[g.name]) for g in self.groups)
        return before, after


def prune_taps(
    model: nn.Module,
    x: SparseTensor,
    ratio: float,
    criterion: str = "magnitude",
    scope: str = "global",
    batches: Batches = (),
    loss_fn: Callable | None = None,
    exclude: Iterable[str] = (),
    strided: bool = False,
) -> TapPruneResult:
    """One-shot tap pruning of a copy of ``model``: group by map, score, select ``ratio`` of the map work, remove.

    ``ratio`` is a fraction of the candidate groups' map work (submanifold convs unless ``strided``).
    """
    pruned = copy_model(model)
    groups = tap_groups(pruned, x, exclude, strided)
    scores = tap_importance(pruned, groups, criterion, batches, loss_fn)
    kept = select_taps(groups, scores, ratio, scope)
    remove_taps(pruned, groups, kept)
    return TapPruneResult(pruned, groups, scores, kept)
