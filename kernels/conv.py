"""Sparse conv on Triton: executes a grouping plan with the fused kernels, with autograd.

Two dataflows run the same :class:`~torchsparse_lite.grouping.GroupPlan`
(one launch per group, the identity tap as one more launch):

* ``"atomic"`` — weight-stationary fused gather-GEMM-scatter
  (:mod:`.gather_gemm_scatter`), scatter by ``atomic_add``; the summation
  order of an output row varies from run to run.
* ``"output_stationary"`` — implicit GEMM over a neighbour table
  (:mod:`.implicit_gemm`), no atomics, bit-reproducible; the default when
  ``get_config().deterministic`` is set.

The backward pass runs the same dataflow on the transposed map for the input
gradient and the split-row kernel (:mod:`.weight_grad`) for the weight
gradient. Every kernel accumulates in fp32; outputs are cast back to the
input dtype at the end.

fp32 precision is an explicit engine setting: ``allow_tf32=None`` follows
``EngineConfig.tf32`` (False by default: full-precision FMA), never
``torch.backends.cuda.matmul.allow_tf32``, which a user script may flip for
its dense layers (``torch.set_float32_matmul_precision("high")``). Tiles
default per precision (:func:`~.tiles.default_tiles`): the fp32 FMA path
needs smaller tiles than the tensor-core paths to stay out of spills.
"""

from __future__ import annotations

import torch
import triton

from torchsparse_lite.config import get_config
from torchsparse_lite.grouping import GroupingConfig, GroupPlan, WorkReport, as_grouping, plan_groups
from torchsparse_lite.kmap.kmap import KernelMap

from .aot import capturing
from .gather_gemm_scatter import gather_gemm_scatter, gather_gemm_scatter_kernel
from .implicit_gemm import implicit_gemm, neighbour_table
from .tiles import TileConfig, default_tiles, is_interpreted
from .weight_grad import weight_grad

DATAFLOWS = ("atomic", "output_stationary")


def launch_groups(plan: GroupPlan) -> list[tuple[int, ...]]:
    """Offsets of every launch: the identity tap first (if any), then the plan's groups."""
    head = [(plan.identity,)] if plan.identity is not None else []
    return head + [g.offsets for g in plan.groups if g.rows]


def _atomic_descriptors(kmap: KernelMap, plan: GroupPlan) -> list[tuple[torch.Tensor, int]]:
    """Per launch, a [3, G] int64 (offset, start, count) slice of one device tensor, and its longest map."""
    bounds = kmap.bounds
    launches = launch_groups(plan)
    flat = [k for offs in launches for k in offs]
    host = torch.tensor([flat, [bounds[k][0] for k in flat], [plan.counts[k] for k in flat]], dtype=torch.int64)
    desc = host.to(kmap.in_idx.device)
    out, pos = [], 0
    for offs in launches:
        out.append((desc[:, pos : pos + len(offs)], max(plan.counts[k] for k in offs)))
        pos += len(offs)
    return out


def _offset_lists(kmap: KernelMap, plan: GroupPlan) -> list[torch.Tensor]:
    """Per launch, an int32 tensor of offset ids (slices of one device tensor)."""
    launches = launch_groups(plan)
    flat = torch.tensor([k for offs in launches for k in offs], dtype=torch.int32).to(kmap.in_idx.device)
    out, pos = [], 0
    for offs in launches:
        out.append(flat[pos : pos + len(offs)])
        pos += len(offs)
    return out


def _run(x: torch.Tensor, weight: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, n_rows: int, ctx) -> torch.Tensor:
    """One sparse matmul pass in ``ctx.dataflow``: fp32 [n_rows, Cout]."""
    if ctx.dataflow == "atomic":
        out = torch.zeros((n_rows, weight.shape[2]), dtype=torch.float32, device=x.device)
        gather_gemm_scatter(x, weight, out, src, dst, ctx.descs, ctx.tiles, ctx.allow_tf32)
        return out
    out = torch.empty((n_rows, weight.shape[2]), dtype=torch.float32, device=x.device)
    table = neighbour_table(src, dst, ctx.plan.counts, n_rows)
    implicit_gemm(x, weight, out, table, ctx.offset_lists, ctx.tiles, ctx.allow_tf32)
    return out


class TritonConvFunction(torch.autograd.Function):
    """Autograd function of the Triton path."""

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap, plan: GroupPlan, dataflow: str, allow_tf32: bool, tiles):
        ctx.kmap, ctx.plan, ctx.dataflow, ctx.allow_tf32, ctx.tiles = kmap, plan, dataflow, allow_tf32, tiles
        if dataflow == "atomic":
            ctx.descs = _atomic_descriptors(kmap, plan)
        else:
            ctx.offset_lists = _offset_lists(kmap, plan)
        ctx.save_for_backward(feats, weight)
        return _run(feats, weight, kmap.in_idx, kmap.out_idx, kmap.n_out, ctx).to(feats.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        grad_out = grad_out.contiguous().to(feats.dtype)
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = _run(grad_out, weight.transpose(1, 2), kmap.out_idx, kmap.in_idx, kmap.n_in, ctx)
            grad_feats = grad_feats.to(feats.dtype)
        if ctx.needs_input_grad[1]:
            tiles = ctx.tiles
            grad_weight = weight_grad(feats, grad_out, kmap.in_idx, kmap.out_idx, kmap.counts, tiles, ctx.allow_tf32)
            grad_weight = grad_weight.to(weight.dtype)
        return grad_feats, grad_weight, None, None, None, None, None


def resolve_dataflow(dataflow: str | None) -> str:
    """``None`` -> ``"output_stationary"`` in deterministic mode, else ``"atomic"``."""
    deterministic = get_config().deterministic
    if dataflow is None:
        return "output_stationary" if deterministic else "atomic"
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS} or None, got {dataflow!r}")
    if deterministic and dataflow == "atomic":
        raise ValueError(
            "dataflow='atomic' scatters with atomics and is not reproducible, but the engine is in "
            "deterministic mode; use dataflow='output_stationary' (or None) or set deterministic=False"
        )
    return dataflow


def resolve_tf32(allow_tf32: bool | None) -> bool:
    """``None`` -> ``get_config().tf32``; otherwise the bool given (anything else is a TypeError)."""
    if allow_tf32 is None:
        return get_config().tf32
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool or None, got {allow_tf32!r}")
    return allow_tf32


def check_runnable(feats: torch.Tensor) -> None:
    """Triton kernels need CUDA tensors, or the interpreter for CPU tensors."""
    if feats.is_cuda or (feats.device.type == "cpu" and (is_interpreted(gather_gemm_scatter_kernel) or capturing())):
        return
    raise ValueError(
        f"the Triton backend needs CUDA tensors (got {feats.device}); on the CPU set TRITON_INTERPRET=1 before "
        "torchsparse_lite.kernels is first imported, or use backend='torch'"
    )


def sparse_conv_triton(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    grouping: str | GroupingConfig = "separate",
    *,
    dataflow: str | None = None,
    allow_tf32: bool | None = None,
    tiles: TileConfig | None = None,
) -> torch.Tensor:
    """Sparse convolution with the Triton kernels, differentiable in ``feats`` and ``weight``.

    Args:
        feats: [n_in, Cin] fp32, fp16 or bf16 (CUDA, or CPU under ``TRITON_INTERPRET=1``).
        weight: [K, Cin, Cout], same dtype.
        kmap: the conv's :class:`KernelMap` on the same device.
        grouping: strategy name or :class:`GroupingConfig` (one launch per group).
        dataflow: ``"atomic"``, ``"output_stationary"`` or None (see :func:`resolve_dataflow`).
        allow_tf32: TF32 tensor cores for fp32 inputs; None follows
            ``get_config().tf32`` (not torch's global matmul flag).
        tiles: tile sizes; None picks :func:`default_tiles` for the dtype and precision.

    Returns:
        [n_out, Cout] in ``feats.dtype`` (accumulated in fp32).
    """
    check_runnable(feats)
    if feats.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"feats must be float32, float16 or bfloat16 for the Triton path, got {feats.dtype}")
    if weight.dtype != feats.dtype:
        raise TypeError(f"weight is {weight.dtype} but feats {feats.dtype}; cast one to match")
    if weight.device != feats.device:
        raise ValueError(f"weight is on {weight.device} but feats on {feats.device}; move one with .to()")
    if kmap.in_idx.device != feats.device:
        raise ValueError(f"kmap is on {kmap.in_idx.device} but feats on {feats.device}; move one with .to()")
    if tiles is not None and not isinstance(tiles, TileConfig):
        raise TypeError(f"tiles must be a TileConfig or None, got {type(tiles).__name__}")
    plan = plan_groups(kmap.counts, as_grouping(grouping), kmap.identity_offset, kmap.symmetric)
    flow = resolve_dataflow(dataflow)
    tf32 = resolve_tf32(allow_tf32)
    interp = is_interpreted(gather_gemm_scatter_kernel)
    tiles = tiles or default_tiles(weight.shape[1], weight.shape[2], interp, feats.dtype, tf32)
    return TritonConvFunction.apply(feats, weight, kmap, plan, flow, tf32, tiles)


def triton_work(kmap: KernelMap, plan: GroupPlan, dataflow: str, tiles: TileConfig, cin: int, cout: int) -> WorkReport:
    """Work of one forward pass of the Triton path.

    ``padded_flops`` counts the row tiles that do arithmetic: for ``"atomic"``
    every offset's map rounded up to ``block_m`` (programs past a shorter map
    return at once); for ``"output_stationary"`` every (offset, output tile)
    with at least one neighbour times ``block_m`` rows.
    """
    per_pair = 2 * cin * cout
    launches = launch_groups(plan)
    bm = tiles.block_m
    if dataflow == "atomic":
        rows = sum(triton.cdiv(plan.counts[k], bm) * bm for offs in launches for k in offs)
    elif dataflow == "output_stationary":
        table = neighbour_table(kmap.in_idx, kmap.out_idx, kmap.counts, kmap.n_out)
        pad = (-kmap.n_out) % bm
        table = torch.nn.functional.pad(table, (0, pad), value=-1).view(kmap.volume, -1, bm)
        busy = (table >= 0).any(dim=2).sum(dim=1).tolist()
        rows = sum(busy[k] * bm for offs in launches for k in offs)
    else:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    return WorkReport(plan.real_pairs * per_pair, rows * per_pair, len(launches))
