"""Parameter and multiply-accumulate (MAC) counts of sparse networks.

MAC conventions (one MAC = one multiply + one add):

* sparse :class:`~torchsparse_lite.nn.Conv3d`: ``map pairs x Cin x Cout``,
  where the pairs are the entries of the layer's kernel map on the given input
  (the centre tap of a submanifold conv counts ``N`` pairs). Bias adds are free.
* ``nn.Linear`` (dense, or the sparse wrapper): ``rows x in x out``.
* normalisation (BatchNorm, GroupNorm): ``rows x C`` (one scale-and-shift per
  value) only with ``include_norm=True``; by default they are left out because
  at inference they fold into the preceding conv (TorchSparse/SPVNAS report
  conv + linear MACs only).
* activations, pooling, residual adds and concatenations: free.

Counts come from forward hooks on one forward pass (no gradients, eval mode,
training mode restored afterwards).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..nn.conv import Conv3d
from ..tensor import SparseTensor

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with ``requires_grad``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _rows(t: object) -> int:
    if isinstance(t, SparseTensor):
        return int(t.feats.shape[0])
    if isinstance(t, torch.Tensor):
        return int(t.numel() // t.shape[-1]) if t.dim() else 1
    raise TypeError(f"cannot count rows of a {type(t).__name__}")


def _layer_macs(module: nn.Module, inp: object, include_norm: bool) -> int | None:
    if isinstance(module, Conv3d):
        kmap = module.kernel_map(inp)  # type: ignore[arg-type] - a cache hit: the forward just built it
        return sum(kmap.counts) * module.in_channels * module.out_channels
    if isinstance(module, nn.Linear):
        return _rows(inp) * module.in_features * module.out_features
    if include_norm and isinstance(module, _NORMS):
        rows = _rows(inp)
        channels = module.num_features if isinstance(module, nn.modules.batchnorm._BatchNorm) else module.num_channels
        return rows * channels
    return None


def count_macs_by_layer(model: nn.Module, x: SparseTensor, *, include_norm: bool = False) -> dict[str, int]:
    """MACs of every counted layer for input ``x`` (see the module docstring).

    Args:
        model: a network taking ``x`` as its only argument.
        x: SparseTensor input (batch of any size).
        include_norm: count normalisation layers as ``rows x C``.

    Returns:
        ``{qualified module name: MACs}`` in call order; a module called twice
        accumulates.
    """
    if not isinstance(x, SparseTensor):
        raise TypeError(f"x must be a SparseTensor, got {type(x).__name__}")
    counts: dict[str, int] = {}

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            macs = _layer_macs(module, args[0], include_norm)
            if macs is not None:
                counts[name] = counts.get(name, 0) + macs

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts


def count_macs(model: nn.Module, x: SparseTensor, *, include_norm: bool = False) -> int:
    """Total MACs of one forward pass of ``model`` on ``x`` (see the module docstring)."""
    return sum(count_macs_by_layer(model, x, include_norm=include_norm).values())
