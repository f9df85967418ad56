"""Unstructured and N:M sparsity as weight masks applied by forward pre-hooks.

Masks use ``torch.nn.utils.prune`` (``weight_orig`` parameter, ``weight_mask``
buffer, a pre-hook recomputing ``weight = weight_orig * weight_mask``), so the
pruned entries stay zero through fine-tuning; :func:`remove_masks` bakes them in.

N:M sparsity runs along the *input-channel* axis of each offset's [Cin, Cout]
weight (``Conv3d.weight`` [K, Cin, Cout]; ``nn.Linear.weight`` [out, in]): in
every run of M consecutive input channels at most N entries are non-zero, the
layout of NVIDIA's 2:4 sparse tensor cores (a GEMM ``x[m, Cin] @ W[Cin, Cout]``
is ``F.linear(x, W.T)`` with 2:4 along the rows of ``W.T``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .. import nn as tsnn


def _cin_last(weight: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """View with input channels last: conv [K, Cout, Cin], linear [out, in]."""
    return weight.transpose(1, 2) if isinstance(module, tsnn.Conv3d) else weight


def _from_cin_last(t: torch.Tensor, module: nn.Module) -> torch.Tensor:
    return t.transpose(1, 2) if isinstance(module, tsnn.Conv3d) else t


def nm_mask_lastdim(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the ``n`` largest-magnitude entries of every ``m`` along the last dim.

    A trailing partial run of ``r < m`` entries keeps ``min(n, r)``.
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m for N:M sparsity, got n={n}, m={m}")
    c = w.shape[-1]
    full = (c // m) * m
    mask = torch.zeros_like(w, dtype=torch.bool)
    if full:
        blocks = w[..., :full].abs().reshape(*w.shape[:-1], c // m, m)
        top = blocks.topk(n, dim=-1).indices
        bm = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, top, True)
        mask[..., :full] = bm.reshape(*w.shape[:-1], full)
    if c > full:
        rest = w[..., full:].abs()
        top = rest.topk(min(n, c - full), dim=-1).indices
        mask[..., full:] = torch.zeros_like(rest, dtype=torch.bool).scatter_(-1, top, True)
    return mask


def nm_mask(module: nn.Module, n: int = 2, m: int = 4, weight: torch.Tensor | None = None) -> torch.Tensor:
    """N:M mask of a Conv3d [K, Cin, Cout] or Linear [out, in] weight along input channels."""
    w = (module.weight if weight is None else weight).detach()
    return _from_cin_last(nm_mask_lastdim(_cin_last(w, module), n, m), module)


def is_nm_sparse(module: nn.Module, n: int = 2, m: int = 4, weight: torch.Tensor | None = None) -> bool:
    """True when every run of ``m`` input channels (per offset and output) has at most ``n`` non-zeros."""
    w = _cin_last((module.weight if weight is None else weight).detach(), module)
    c = w.shape[-1]
    pad = (-c) % m
    nz = torch.nn.functional.pad((w != 0).to(torch.int32), (0, pad))
    return bool((nz.reshape(*w.shape[:-1], -1, m).sum(-1) <= n).all())


def prunable_weights(model: nn.Module, exclude: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv3d / Linear not excluded (by name or prefix)."""
    exclude = tuple(exclude)
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, (tsnn.Conv3d, nn.Linear)) and not any(
            name == e or name.startswith(e + ".") for e in exclude
        ):
            out.append((name, mod))
    return out


def _attach(module: nn.Module, mask: torch.Tensor) -> None:
    if tprune.is_pruned(module) and hasattr(module, "weight_mask"):
        tprune.remove(module, "weight")
    tprune.custom_from_mask(module, "weight", mask.to(module.weight.device))


def apply_nm_sparsity(
    model: nn.Module, n: int = 2, m: int = 4, exclude: Iterable[str] = (), min_in_channels: int | None = None
) -> dict[str, torch.Tensor]:
    """Attach N:M masks (by magnitude) to every Conv3d / Linear of ``model`` in place.

    Args:
        n, m: keep ``n`` of every ``m`` input channels (2:4 by default).
        exclude: module names (or prefixes) left dense.
        min_in_channels: skip layers with fewer input channels (default ``m``; e.g. the
            stem conv on 4 raw features).

    Returns:
        ``{module name: bool mask}`` of the masked layers.
    """
    min_in = m if min_in_channels is None else min_in_channels
    masks = {}
    for name, mod in prunable_weights(model, exclude):
        cin = mod.in_channels if isinstance(mod, tsnn.Conv3d) else mod.in_features
        if cin < min_in:
            continue
        masks[name] = nm_mask(mod, n, m)
        _attach(mod, masks[name])
    return masks


def apply_unstructured(
    model: nn.Module, amount: float, scope: str = "global", exclude: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """Magnitude masks removing ``amount`` of the weights (``scope`` global: one threshold for all layers).

    Returns:
        ``{module name: bool mask}``.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount!r}")
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    layers = prunable_weights(model, exclude)
    if not layers:
        raise ValueError("no Conv3d / Linear layer to prune (check exclude)")
    masks = {}
    if scope == "global":
        mags = torch.cat([mod.weight.detach().abs().flatten().cpu() for _, mod in layers])
        k = int(amount * mags.numel())
        thr = mags.kthvalue(k).values if k > 0 else mags.new_tensor(-1.0)
        for name, mod in layers:
            masks[name] = mod.weight.detach().abs() > thr.to(mod.weight.device)
    else:
        for name, mod in layers:
            w = mod.weight.detach().abs().flatten()
            k = int(amount * w.numel())
            thr = w.kthvalue(k).values if k > 0 else w.new_tensor(-1.0)
            masks[name] = mod.weight.detach().abs() > thr
    for name, mod in layers:
        _attach(mod, masks[name])
    return masks


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake every pruning mask into its weight and drop the hooks (in place)."""
    for mod in model.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(mod, hook._tensor_name)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over every Conv3d / Linear weight."""
    total = zeros = 0
    for _, mod in prunable_weights(model):
        w = mod.weight.detach()
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / max(total, 1)
