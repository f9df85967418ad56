"""The Triton path as custom ops: ``conv_triton`` and ``conv_triton_weight_grad`` (see :mod:`.conv`).

Their ``plan`` arguments are ``(dataflow, tf32, tiles)``: ``"atomic"`` or
``"output_stationary"``, TF32 for fp32 inputs, and a ``TileConfig``'s six
ints (``block_m, block_n, block_k, num_warps, num_stages, split_rows``) or
``[]`` for the per-precision defaults. Registering them imports no Triton;
their real kernels import ``torchsparse_lite.kernels`` when they first run
(on CUDA tensors, or on the CPU under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..grouping.execution import ExecutionPlan
from ..kmap.kernel_map import MapPairs
from .conv import planned_groups, register_conv_autograd, runtime_pairs, swapped


def _triton_plan(pairs: MapPairs, x: Tensor, weight: Tensor, grouping: tuple, dataflow: str, tf32: bool,
                 tiles: list[int]) -> ExecutionPlan:  # fmt: skip
    from ..kernels.conv import plan_tiles  # noqa: PLC0415 - Triton is imported only when a Triton op runs
    from ..kernels.tiles import TileConfig  # noqa: PLC0415

    groups = planned_groups(pairs, *grouping)
    chosen = plan_tiles(TileConfig(*tiles) if tiles else None, int(weight.shape[1]), int(weight.shape[2]), x.dtype,
                        tf32)  # fmt: skip
    return ExecutionPlan("triton", groups, dataflow=dataflow, tf32=tf32, tiles=chosen,
                         deterministic=dataflow == "output_stationary")  # fmt: skip


@torch.library.custom_op("torchsparse_lite::conv_triton", mutates_args=())
def conv_triton(x: Tensor, weight: Tensor, in_idx: Tensor, out_idx: Tensor, counts: Tensor, n_rows: int,
                identity: int, symmetric: bool, swap: bool, strategy: str, group_size: int, epsilon: float,
                threshold: int, fold: bool, dataflow: str, tf32: bool, tiles: list[int]) -> Tensor:  # fmt: skip
    """The Triton path's pass over the map: [n_src, Cin] -> [n_rows, Cout] in ``x.dtype`` (fp32 accumulation)."""
    from ..kernels.conv import check_runnable, run_pass  # noqa: PLC0415 - Triton is imported only when a Triton op runs

    check_runnable(x)
    pairs = runtime_pairs(x.shape[0], in_idx, out_idx, counts, n_rows, identity, symmetric, swap)
    plan = _triton_plan(pairs, x, weight, (strategy, group_size, epsilon, threshold, fold), dataflow, tf32, tiles)
    return run_pass(x.contiguous(), weight, pairs, plan, backward=swap)


@torch.library.custom_op("torchsparse_lite::conv_triton_weight_grad", mutates_args=())
def conv_triton_weight_grad(x: Tensor, grad: Tensor, in_idx: Tensor, out_idx: Tensor, counts: Tensor,
                            identity: int, symmetric: bool, swap: bool, strategy: str, group_size: int,
                            epsilon: float, threshold: int, fold: bool, dataflow: str, tf32: bool,
                            tiles: list[int]) -> Tensor:  # fmt: skip
    """The split-row weight-gradient kernel over the map (pairs exchanged when ``swap``) -> [K, Cin, Cout]."""
    from ..kernels.conv import run_weight_grad  # noqa: PLC0415 - Triton is imported only when a Triton op runs

    pairs = runtime_pairs(x.shape[0], in_idx, out_idx, counts, grad.shape[0], identity, symmetric, swap)
    pairs = swapped(pairs) if swap else pairs
    weight_like = x.new_empty((0, x.shape[1], grad.shape[1]))
    plan = _triton_plan(pairs, x, weight_like, (strategy, group_size, epsilon, threshold, fold), dataflow, tf32,
                        tiles)  # fmt: skip
    return run_weight_grad(x, grad, pairs, plan)


register_conv_autograd(conv_triton, conv_triton_weight_grad)
