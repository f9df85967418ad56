"""Sparse convolution as gather -> GEMM -> scatter, in pure PyTorch.

This is the CPU path and the reference every Triton kernel is tested against.
For each kernel offset ``k`` with pairs ``(i, o)``:

    out[o] += feats[i] @ weight[k]          (forward)
    grad_feats[i] += grad_out[o] @ weight[k].T   (backward: the transposed map)
    grad_weight[k] = feats[i].T @ grad_out[o]

Gather buffers are bounded by ``chunk_rows`` rows per step. The centre tap of
a submanifold conv maps every row to itself and needs no gather at all.
"""

from __future__ import annotations

import torch

from ..config import get_config, resolve
from ..grouping import GroupingConfig, GroupingTuner, as_grouping, grouped_sparse_conv
from ..kmap.kmap import KernelMap


def gather_gemm_scatter(
    feats: torch.Tensor,
    weight: torch.Tensor,
    in_idx: torch.Tensor,
    out_idx: torch.Tensor,
    bounds: list[tuple[int, int]],
    n_out: int,
    identity_offset: int | None = None,
    chunk_rows: int = 1 << 17,
) -> torch.Tensor:
    """``out[out_idx] += feats[in_idx] @ weight[k]`` over every offset's pair range.

    Args:
        feats: [N, Cin]; weight: [K, Cin, Cout]; in_idx/out_idx: [M] int64.
        bounds: K (start, end) ranges into the pair arrays.
        n_out: number of output rows.
        identity_offset: offset whose pairs are exactly ``arange(N)`` both ways.

    Returns:
        [n_out, Cout] tensor in ``feats.dtype``.
    """
    if identity_offset is not None and bounds[identity_offset][1] > bounds[identity_offset][0]:
        # The centre tap maps every row to itself: a plain GEMM initialises
        # the output, saving both a zero fill and a gather.
        out = feats @ weight[identity_offset]
    else:
        out = feats.new_zeros((n_out, weight.shape[2]))
    for k, (start, end) in enumerate(bounds):
        if end == start or k == identity_offset:
            continue
        for s in range(start, end, chunk_rows):
            e = min(s + chunk_rows, end)
            out.index_add_(0, out_idx[s:e], feats.index_select(0, in_idx[s:e]) @ weight[k])
    return out


def weight_grad(
    feats: torch.Tensor,
    grad_out: torch.Tensor,
    in_idx: torch.Tensor,
    out_idx: torch.Tensor,
    bounds: list[tuple[int, int]],
    identity_offset: int | None = None,
    chunk_rows: int = 1 << 17,
) -> torch.Tensor:
    """``grad_weight[k] = feats[in_idx_k].T @ grad_out[out_idx_k]`` -> [K, Cin, Cout]."""
    grad = feats.new_zeros((len(bounds), feats.shape[1], grad_out.shape[1]))
    for k, (start, end) in enumerate(bounds):
        if k == identity_offset and end > start:
            grad[k].addmm_(feats.t(), grad_out)
            continue
        for s in range(start, end, chunk_rows):
            e = min(s + chunk_rows, end)
            grad[k].addmm_(feats.index_select(0, in_idx[s:e]).t(), grad_out.index_select(0, out_idx[s:e]))
    return grad


class SparseConvFunction(torch.autograd.Function):
    """Autograd function of the PyTorch path with a hand-written backward."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, chunk_rows: int) -> torch.Tensor:
        ctx.kmap = kmap
        ctx.chunk_rows = chunk_rows
        ctx.save_for_backward(feats, weight)
        return gather_gemm_scatter(
            feats, weight, kmap.in_idx, kmap.out_idx, kmap.bounds, kmap.n_out, kmap.identity_offset, chunk_rows
        )

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = gather_gemm_scatter(
                grad_out,
                weight.transpose(1, 2),
                kmap.out_idx,
                kmap.in_idx,
                kmap.bounds,
                kmap.n_in,
                kmap.identity_offset,
                ctx.chunk_rows,
            )
        if ctx.needs_input_grad[1]:
            grad_weight = weight_grad(
                feats, grad_out, kmap.in_idx, kmap.out_idx, kmap.bounds, kmap.identity_offset, ctx.chunk_rows
            )
        return grad_feats, grad_weight, None, None


def check_conv_inputs(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> None:
    """Raise a clear error when features, weight and map do not fit together."""
    if weight.dim() != 3:
        raise ValueError(f"weight must have shape [K, Cin, Cout], got {list(weight.shape)}")
    if weight.shape[0] != kmap.volume:
        raise ValueError(f"weight has {weight.shape[0]} kernel taps but the map has {kmap.volume} offsets")
    if feats.dim() != 2 or feats.shape[1] != weight.shape[1]:
        raise ValueError(
            f"feats has shape {list(feats.shape)} but the layer expects {weight.shape[1]} input channels"
        )
    if feats.shape[0] != kmap.n_in:
        raise ValueError(f"feats has {feats.shape[0]} rows but the kernel map was built for {kmap.n_in} inputs")
    if feats.dtype != weight.dtype:
        raise TypeError(f"feats is {feats.dtype} but weight is {weight.dtype}; cast one to match")
    if feats.device != weight.device:
        raise ValueError(f"feats is on {feats.device} but weight on {weight.device}")


def sparse_conv(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    *,
    backend: str | None = None,
    grouping: str | GroupingConfig | GroupingTuner | None = None,
    tf32: bool | None = None,
) -> torch.Tensor:
    """Apply a sparse convolution given its kernel map.

    Args:
        feats: [n_in, Cin] input features.
        weight: [K, Cin, Cout] weights, row ``k`` for offset ``k``.
        kmap: the :class:`KernelMap` (a transposed conv passes the swapped map).
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (Triton on CUDA).
        grouping: strategy name, :class:`GroupingConfig`, or a
            :class:`GroupingTuner` that picks (and caches) an adaptive config
            per layer signature and device (see ``torchsparse_lite.grouping``);
            with ``deterministic=True`` the tuner does not time anything and
            takes :meth:`GroupingTuner.fixed_choice`, a function of the map alone.
        tf32: fp32 on TF32 tensor cores on the Triton backend; None follows
            ``get_config().tf32`` (default False), never torch's global
            ``allow_tf32`` flag. The torch backend is the fp32 reference and
            ignores it.

    Returns:
        [n_out, Cout] output features.
    """
    check_conv_inputs(feats, weight, kmap)
    backend = resolve("backend", backend)
    if backend == "auto":
        backend = "triton" if feats.is_cuda else "torch"
    if backend not in ("torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    grouping = resolve("grouping", grouping)
    tf32 = resolve("tf32", tf32)
    if not isinstance(tf32, bool):
        raise TypeError(f"tf32 must be a bool or None, got {tf32!r}")
    if isinstance(grouping, GroupingTuner) and get_config().deterministic:
        # A timed choice can differ run to run, and groupings sum in different orders.
        grouping = grouping.fixed_choice(kmap)
    elif isinstance(grouping, GroupingTuner):
        grouping = grouping.choose(
            feats,
            weight,
            kmap,
            lambda cfg: _run(feats.detach(), weight.detach(), kmap, backend, cfg, tf32),
            tag=backend,
        )
    return _run(feats, weight, kmap, backend, as_grouping(grouping), tf32)


def _run(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    backend: str,
    grouping: GroupingConfig,
    tf32: bool | None = None,
) -> torch.Tensor:
    """Execute the conv on ``backend`` with the given grouping (``tf32``: Triton fp32 precision, None = config)."""
    if backend == "triton":
        from .. import kernels  # noqa: PLC0415 - Triton is imported only when used

        return kernels.sparse_conv_triton(feats, weight, kmap, grouping=grouping, allow_tf32=tf32)
    if grouping.strategy != "separate":
        return grouped_sparse_conv(feats, weight, kmap, grouping, get_config().chunk_rows)
    return SparseConvFunction.apply(feats, weight, kmap, get_config().chunk_rows)
