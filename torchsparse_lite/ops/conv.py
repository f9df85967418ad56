"""The conv compute as custom ops, with autograd: the PyTorch gather-GEMM-scatter and the Triton kernels.

Each backend is two ops over a map given as tensors (what a traced map holds):

* ``torchsparse_lite::conv_<backend>(x, weight, in_idx, out_idx, counts, n_rows, identity,
  symmetric, swap, strategy, group_size, epsilon, threshold, fold, *plan) -> [n_rows, C]``:
  ``out[o] += x[i] @ weight[k]`` over the pairs ``(i, o)`` of each offset
  ``k`` (``swap``: ``out[i] += x[o] @ weight[k]``, the input gradient's pass);
* ``torchsparse_lite::conv_<backend>_weight_grad(x, grad, in_idx, out_idx, counts, identity,
  symmetric, swap, strategy, ..., *plan) -> [K, Cin, Cout]``.

``n_rows`` (output rows) is the map's output count, a symbolic size in a
graph; ``identity`` is the identity offset or -1; the grouping is
:class:`~torchsparse_lite.grouping.GroupingConfig`'s five fields; ``plan``
is ``(chunk_rows, ordered)`` for ``torch`` and ``(dataflow, tf32, tiles)``
for ``triton`` (``tiles``: a ``TileConfig``'s six ints, ``[]`` = defaults).

Inside, an op reads the per-offset counts (``counts.tolist()``), plans the
groups from them and runs the same executor as eager
(:func:`~torchsparse_lite.grouping.torch_exec.run_groups`,
``kernels.conv.run_pass``) on a :class:`~torchsparse_lite.kmap.kernel_map.MapPairs`
view: results are those of the eager path with the same settings (the
PyTorch op takes the segment scatter on CPU tensors, as eager plans do). What
eager caches per map (group indices, segment blocks, Triton descriptors) is
rebuilt per call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..grouping.config import GroupingConfig
from ..grouping.execution import ExecutionPlan, default_scatter
from ..grouping.plan import plan_groups
from ..grouping.torch_exec import run_groups, weight_grad_groups
from ..kmap.kernel_map import MapPairs

GroupingArgs = tuple[str, int, float, int, bool]


def grouping_args(grouping: GroupingConfig) -> GroupingArgs:
    """``(strategy, group_size, epsilon, threshold, fold)`` of ``grouping``."""
    g = grouping
    return g.strategy, g.group_size, float(g.epsilon), g.threshold, g.fold


def runtime_pairs(n_src: int, in_idx: Tensor, out_idx: Tensor, counts: Tensor, n_rows: int, identity: int,
                  symmetric: bool, swap: bool) -> MapPairs:  # fmt: skip
    """The :class:`MapPairs` of an op's map arguments (``n_src``: rows of the op's input ``x``)."""
    n_in, n_out = (n_rows, n_src) if swap else (n_src, n_rows)
    return MapPairs(in_idx, out_idx, tuple(counts.tolist()), n_in, n_out, None if identity < 0 else identity, symmetric)


def planned_groups(pairs: MapPairs, strategy: str, group_size: int, epsilon: float, threshold: int, fold: bool):
    """The :class:`~torchsparse_lite.grouping.GroupPlan` of ``pairs`` for the grouping's fields."""
    grouping = GroupingConfig(strategy, group_size, epsilon, threshold, fold)
    return plan_groups(pairs.counts, grouping, pairs.identity_offset, pairs.symmetric)


def swapped(pairs: MapPairs) -> MapPairs:
    """The same pairs with inputs and outputs exchanged (the weight gradient of a ``swap`` pass)."""
    return MapPairs(pairs.out_idx, pairs.in_idx, pairs.counts, pairs.n_out, pairs.n_in, pairs.identity_offset,
                    pairs.symmetric)  # fmt: skip


@torch.library.custom_op("torchsparse_lite::conv_torch", mutates_args=())
def conv_torch(x: Tensor, weight: Tensor, in_idx: Tensor, out_idx: Tensor, counts: Tensor, n_rows: int,
               identity: int, symmetric: bool, swap: bool, strategy: str, group_size: int, epsilon: float,
               threshold: int, fold: bool, chunk_rows: int, ordered: bool) -> Tensor:  # fmt: skip
    """The PyTorch path's pass over the map (see the module doc): [n_src, Cin] -> [n_rows, Cout]."""
    pairs = runtime_pairs(x.shape[0], in_idx, out_idx, counts, n_rows, identity, symmetric, swap)
    groups = planned_groups(pairs, strategy, group_size, epsilon, threshold, fold)
    plan = ExecutionPlan("torch", groups, chunk_rows, False, ordered, scatter=default_scatter(x.device.type))
    return run_groups(x, weight, pairs, plan, swap)


@torch.library.custom_op("torchsparse_lite::conv_torch_weight_grad", mutates_args=())
def conv_torch_weight_grad(x: Tensor, grad: Tensor, in_idx: Tensor, out_idx: Tensor, counts: Tensor,
                           identity: int, symmetric: bool, swap: bool, strategy: str, group_size: int,
                           epsilon: float, threshold: int, fold: bool, chunk_rows: int,
                           ordered: bool) -> Tensor:  # fmt: skip
    """``grad_weight[k] = x[in_k].T @ grad[out_k]`` (pairs exchanged when ``swap``) -> [K, Cin, Cout]."""
    pairs = runtime_pairs(x.shape[0], in_idx, out_idx, counts, grad.shape[0], identity, symmetric, swap)
    groups = planned_groups(pairs, strategy, group_size, epsilon, threshold, fold)
    plan = ExecutionPlan("torch", groups, chunk_rows, False, ordered)
    return weight_grad_groups(x, grad, swapped(pairs) if swap else pairs, plan)


def conv_fake(x, weight, in_idx, out_idx, counts, n_rows, *args):
    return x.new_empty((n_rows, weight.shape[2]))


def weight_grad_fake(x, grad, in_idx, out_idx, counts, *args):
    return x.new_empty((counts.shape[0], x.shape[1], grad.shape[1]))


def register_conv_autograd(conv: Callable, weight_grad: Callable) -> None:
    """Fake kernels for both ops and the backward of ``conv``: the opposite pass and the weight gradient."""
    conv.register_fake(conv_fake)
    weight_grad.register_fake(weight_grad_fake)

    def setup_context(ctx, inputs, output) -> None:
        x, weight, in_idx, out_idx, counts = inputs[:5]
        ctx.save_for_backward(x, weight, in_idx, out_idx, counts)
        ctx.rest = inputs[6:]  # identity, symmetric, swap, then the grouping and the backend's plan

    def backward(ctx, grad: Tensor):
        x, weight, in_idx, out_idx, counts = ctx.saved_tensors
        identity, symmetric, swap, *plan = ctx.rest
        grad = grad.contiguous()
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = conv(grad, weight.transpose(1, 2), in_idx, out_idx, counts, x.shape[0], identity, symmetric,
                          not swap, *plan)  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_weight = weight_grad(x, grad, in_idx, out_idx, counts, identity, symmetric, swap, *plan)
        return (grad_x, grad_weight) + (None,) * (len(ctx.rest) + 4)

    conv.register_autograd(backward, setup_context=setup_context)


register_conv_autograd(conv_torch, conv_torch_weight_grad)
