"""The linear view of a conv / linear layer at sampled output rows, which selection and reconstruction regress on.

Output row ``n`` of a layer is ``bias + sum_k x[nbr_k(n)] @ W[k]`` with ``W`` = :func:`layer_weight` ``[K, Cin, Cout]``
(a linear layer is ``K = 1``, ``nbr(n) = n``). :func:`patches` gathers the ``[S, K, Cin]`` inputs of ``S`` output
rows from the layer's own (cached) kernel map, so ``einsum("skc,kco->so", patches, W)`` is its output minus bias at
those rows, for submanifold, strided and transposed convs alike.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as tsnn
from ..tensor import SparseTensor


def forward_args(inputs: object) -> tuple:
    """A batch input as the model's positional arguments."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def feats_of(x: object) -> torch.Tensor:
    """Features ``[N, C]`` of a SparseTensor, or the tensor itself."""
    return x.feats if isinstance(x, SparseTensor) else x  # type: ignore[return-value]


def layer_weight(module: nn.Module) -> torch.Tensor:
    """``[K, Cin, Cout]`` weight of a ``Conv3d`` (itself) or ``Linear`` (``weight.t()[None]``, a view)."""
    if isinstance(module, tsnn.Conv3d):
        return module.weight
    if isinstance(module, nn.Linear):
        return module.weight.t()[None]
    raise TypeError(f"only Conv3d and Linear layers have a regression view, got {type(module).__name__}")


def set_layer_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write a ``[K, Cin, Cout]`` weight back into a ``Conv3d`` / ``Linear`` (in place, no autograd)."""
    target = layer_weight(module)
    if weight.shape != target.shape:
        raise ValueError(f"weight has shape {list(weight.shape)}, the layer needs {list(target.shape)}")
    with torch.no_grad():
        target.copy_(weight.to(target))


def sample_rows(n: int, samples: int, seed: int) -> torch.Tensor:
    """Sorted ``min(n, samples)`` distinct row indices of ``0 .. n-1``, repeatable by ``seed``."""
    if n <= samples:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:samples].sort().values


def patches(module: nn.Module, inp: object, rows: torch.Tensor) -> torch.Tensor:
    """``[S, K, Cin]`` inputs that output rows ``rows`` [S] of ``module`` read (zeros where a tap has no input).

    Args:
        module: a ``Conv3d`` (``inp`` its input SparseTensor) or ``Linear`` (``inp`` a tensor ``[N, Cin]``).
    """
    x = feats_of(inp).detach()
    if isinstance(module, nn.Linear):
        return x[rows.to(x.device)][:, None]
    kmap = module.kernel_map(inp)
    pos = torch.full((kmap.n_out,), -1, dtype=torch.long, device=x.device)
    pos[rows.to(x.device)] = torch.arange(len(rows), device=x.device)
    out = x.new_zeros(len(rows), kmap.volume, x.shape[1])
    for k, (a, b) in enumerate(kmap.bounds):
        at = pos[kmap.out_idx[a:b]]
        keep = at >= 0
        out[at[keep], k] = x[kmap.in_idx[a:b][keep]]
    return out


def output_rows(output: object) -> int:
    """Rows of a layer output (SparseTensor or tensor)."""
    return int(feats_of(output).shape[0])
