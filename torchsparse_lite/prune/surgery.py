"""Physically remove (or reorder) channel groups; the masked equivalent; shapes for save/load.

A *selection* maps a group id to the channel indices that stay, in their new
order: sorted kept indices for pruning, a permutation for reordering. Every
module slot of the group is sliced with it and the layer is rebuilt smaller
with the kept weights copied, so the result is an ordinary model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import nn as tsnn
from .graph import ChannelGroup, DependencyGraph

Selection = dict[int, torch.Tensor]


@dataclass
class PruneResult:
    """The pruned model and, per rebuilt module, the original indices it kept.

    ``kept[name]`` has ``"in"`` / ``"out"`` (conv, linear) or ``"channels"`` (norm)
    index tensors into the module's channels before this step.
    """

    model: nn.Module
    kept: dict[str, dict[str, torch.Tensor]]


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on models carrying ``torch.nn.utils.prune`` masks.

    A masked module's ``weight`` is recomputed (with grad) by its pre-hook at each
    forward, which deepcopy refuses; it is replaced by a detached value first.
    """
    for mod in model.modules():
        if hasattr(mod, "weight_mask") and hasattr(mod, "weight_orig"):
            mod.weight = (mod.weight_orig * mod.weight_mask).detach()
    return copy.deepcopy(model)


def keep_from_remove(graph: DependencyGraph, remove: dict[int, torch.Tensor]) -> Selection:
    """Turn "indices to remove" per group into sorted "indices to keep" (at least one stays)."""
    out: Selection = {}
    for g in graph.groups:
        if g.gid not in remove:
            continue
        idx = torch.as_tensor(remove[g.gid], dtype=torch.long).unique()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= g.size):
            raise ValueError(f"remove[{g.gid}] ({g.name}) holds indices outside 0..{g.size - 1}")
        mask = torch.ones(g.size, dtype=torch.bool)
        mask[idx] = False
        if not bool(mask.any()):
            raise ValueError(f"remove[{g.gid}] ({g.name}) removes all {g.size} channels; keep at least one")
        out[g.gid] = mask.nonzero().flatten()
    return out


def _module_indices(graph: DependencyGraph, selection: Selection) -> dict[str, dict[str, dict[int, tuple]]]:
    """name -> role ("out", "in", "channels") -> offset -> (group size, selected indices)."""
    edits: dict[str, dict[str, dict[int, tuple]]] = {}
    for g in graph.groups:
        sel = selection.get(g.gid)
        if sel is None:
            continue
        for role, slots in (("out", g.producers), ("channels", g.norms), ("in", g.consumers)):
            for slot in slots:
                edits.setdefault(slot.name, {}).setdefault(role, {})[slot.offset] = (g.size, sel)
    return edits


def _index(width: int, pieces: dict[int, tuple]) -> torch.Tensor:
    parts, pos = [], 0
    for off in sorted(pieces):
        size, sel = pieces[off]
        if off < pos or off + size > width:
            raise ValueError(f"overlapping channel slots at offset {off} of a {width}-channel layer")
        parts += [torch.arange(pos, off), off + sel.to(torch.long)]
        pos = off + size
    parts.append(torch.arange(pos, width))
    return torch.cat(parts)


def _rebuild(module: nn.Module, roles: dict[str, dict[int, tuple]]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A new, smaller module with the selected weights copied."""
    dev = next(iter(module.parameters()), torch.empty(0)).device
    if isinstance(module, tsnn.Conv3d):
        i = _index(module.in_channels, roles.get("in", {})).to(dev)
        o = _index(module.out_channels, roles.get("out", {})).to(dev)
        if type(module) is tsnn.Conv3d:
            new = tsnn.Conv3d(
                len(i), len(o), module.kernel_size, module.stride, module.dilation, module.bias is not None,
                module.transposed, padding=module.padding, submanifold=module.submanifold,
                generative=module.generative, map_key=module.map_key, taps=module.taps,
                kmap_builder=module.kmap_builder,
                backend=module.backend, grouping=module.grouping, downsample_mode=module.downsample_mode,
            )  # fmt: skip
        else:
            new = copy.deepcopy(module)
            new.in_channels, new.out_channels = len(i), len(o)
        new.weight = nn.Parameter(module.weight.detach()[:, i][:, :, o].clone())
        if module.bias is not None:
            new.bias = nn.Parameter(module.bias.detach()[o].clone())
        kept = {"in": i.cpu(), "out": o.cpu()}
    elif isinstance(module, nn.Linear):
        i = _index(module.in_features, roles.get("in", {})).to(dev)
        o = _index(module.out_features, roles.get("out", {})).to(dev)
        new = copy.deepcopy(module)
        new.in_features, new.out_features = len(i), len(o)
        new.weight = nn.Parameter(module.weight.detach()[o][:, i].clone())
        if module.bias is not None:
            new.bias = nn.Parameter(module.bias.detach()[o].clone())
        kept = {"in": i.cpu(), "out": o.cpu()}
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        c = _index(module.num_features, roles.get("channels", {})).to(dev)
        new = type(module)(len(c), module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            new.weight = nn.Parameter(module.weight.detach()[c].clone())
            new.bias = nn.Parameter(module.bias.detach()[c].clone())
        if module.track_running_stats:
            new.running_mean = module.running_mean[c].clone()
            new.running_var = module.running_var[c].clone()
            new.num_batches_tracked = module.num_batches_tracked.clone()
        kept = {"channels": c.cpu()}
    else:
        raise TypeError(f"cannot prune a {type(module).__name__}; only Conv3d, Linear and batch norms are sliced")
    new.to(dev)
    new.train(module.training)
    return new, kept


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace ``model.<name>`` by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_selection(
    model: nn.Module, graph: DependencyGraph, selection: Selection, inplace: bool = False
) -> PruneResult:
    """Slice every module slot of the selected groups and rebuild the layers.

    Args:
        model: the traced model (copied first unless ``inplace``).
        graph: its :class:`DependencyGraph`.
        selection: group id -> channel indices that stay (new order).

    Returns:
        A :class:`PruneResult`; the graph no longer matches the new model.
    """
    if not inplace:
        model = copy_model(model)
    kept = {}
    for name, roles in _module_indices(graph, selection).items():
        new, kept[name] = _rebuild(model.get_submodule(name), roles)
        set_submodule(model, name, new)
    return PruneResult(model, kept)


def prune_groups(
    model: nn.Module, graph: DependencyGraph, remove: dict[int, torch.Tensor], inplace: bool = False
) -> PruneResult:
    """Remove channels ``remove[gid]`` of each group; the model shrinks physically."""
    return apply_selection(model, graph, keep_from_remove(graph, remove), inplace)


def mask_groups(model: nn.Module, graph: DependencyGraph, remove: dict[int, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` in which the removed channels are cut off without changing shapes.

    Every consumer's input rows for those channels are zeroed, so nothing the
    channels carry reaches the rest of the network: its output equals the
    physically pruned model's output.
    """
    model = copy_model(model)
    with torch.no_grad():
        for g in graph.groups:
            if g.gid not in remove:
                continue
            idx = torch.as_tensor(remove[g.gid], dtype=torch.long)
            for slot in g.consumers:
                mod = model.get_submodule(slot.name)
                rows = (slot.offset + idx).to(mod.weight.device)
                mod.weight[:, rows] = 0  # Conv3d [K, Cin, Cout] and Linear [out, in] both index inputs on dim 1
    return model


def group_sizes(graph: DependencyGraph) -> dict[str, int]:
    """Group name -> channel count."""
    return {g.name: g.size for g in graph.groups}


def channel_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Channel counts of every conv / linear / batch norm, for saving a pruned model's architecture."""
    shapes = {}
    for name, mod in model.named_modules():
        if isinstance(mod, tsnn.Conv3d):
            shapes[name] = [mod.in_channels, mod.out_channels]
        elif isinstance(mod, nn.Linear):
            shapes[name] = [mod.in_features, mod.out_features]
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            shapes[name] = [mod.num_features]
    return shapes


def apply_channel_shapes(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Resize a freshly built model's layers to ``shapes`` (then ``load_state_dict`` the pruned weights)."""
    for name, shape in shapes.items():
        mod = model.get_submodule(name)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            roles = {"channels": {0: (mod.num_features, torch.arange(shape[0]))}}
        elif isinstance(mod, tsnn.Conv3d):
            roles = {"in": {0: (mod.in_channels, torch.arange(shape[0]))},
                     "out": {0: (mod.out_channels, torch.arange(shape[1]))}}  # fmt: skip
        elif isinstance(mod, nn.Linear):
            roles = {"in": {0: (mod.in_features, torch.arange(shape[0]))},
                     "out": {0: (mod.out_features, torch.arange(shape[1]))}}  # fmt: skip
        else:
            raise TypeError(f"shapes[{name!r}]: {type(mod).__name__} is not a conv, linear or batch norm")
        set_submodule(model, name, _rebuild(mod, roles)[0])
    return model


def group_slots_valid(group: ChannelGroup, model: nn.Module) -> bool:
    """True when every slot of ``group`` still fits the model (a stale graph fails)."""
    for slot in group.producers:
        mod = model.get_submodule(slot.name)
        width = mod.out_channels if isinstance(mod, tsnn.Conv3d) else mod.out_features
        if slot.offset + group.size > width:
            return False
    return True
