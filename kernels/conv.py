"""Sparse conv on Triton: executes an execution plan with the fused kernels, with autograd.

The launcher reads one frozen :class:`~torchsparse_lite.grouping.ExecutionPlan`
(made by ``functional.plan``, or by :func:`sparse_conv_triton` from explicit
arguments) and never the engine config. Two dataflows run the same
:class:`~torchsparse_lite.grouping.GroupPlan` (one launch per group, the
identity tap as one more launch):

* ``"atomic"`` — weight-stationary fused gather-GEMM-scatter
  (:mod:`.gather_gemm_scatter`), scatter by ``atomic_add``; the summation
  order of an output row varies from run to run.
* ``"output_stationary"`` — implicit GEMM over a neighbour table
  (:mod:`.implicit_gemm`), no atomics, bit-reproducible; what a
  deterministic plan runs.

The backward pass runs the same dataflow on the transposed map for the input
gradient and the split-row kernel (:mod:`.weight_grad`, no atomics) for the
weight gradient. Every kernel accumulates in fp32; outputs are cast back to
the input dtype at the end.

What a plan uploads — the (offset, start, count) descriptors of the atomic
launches, the offset lists and neighbour tables of the output-stationary
ones — is built once per map and plan (:class:`LaunchData`, kept in
``KernelMap.plans``), not on every forward.

fp32 precision is the plan's ``tf32`` (``EngineConfig.tf32``, False by
default: full-precision FMA), never ``torch.backends.cuda.matmul.allow_tf32``,
which a user script may flip for its dense layers
(``torch.set_float32_matmul_precision("high")``). Tiles default per precision
(:func:`~.tiles.default_tiles`): the fp32 FMA path needs smaller tiles than
the tensor-core paths to stay out of spills.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
from torch.autograd.function import once_differentiable

from torchsparse_lite.config import DATAFLOWS
from torchsparse_lite.grouping import ExecutionPlan, GroupingConfig, GroupPlan, WorkReport, as_grouping, plan_groups
from torchsparse_lite.kmap.kernel_map import KernelMap

from .aot import capturing
from .gather_gemm_scatter import gather_gemm_scatter, gather_gemm_scatter_kernel
from .implicit_gemm import implicit_gemm, neighbour_table
from .tiles import TileConfig, default_tiles, is_interpreted
from .weight_grad import weight_grad


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


def direction(kmap: KernelMap, backward: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(gathered rows, scattered rows, output rows) of a pass: the map, or its transpose for the input gradient."""
    return (kmap.out_idx, kmap.in_idx, kmap.n_in) if backward else (kmap.in_idx, kmap.out_idx, kmap.n_out)


@dataclass(frozen=True)
class LaunchData:
    """What one (map, plan) uploads to the device, once: descriptors, and the neighbour tables on demand.

    Attributes:
        descs: ``"atomic"``: per launch, (offset/start/count slice, longest map).
        offset_lists: ``"output_stationary"``: per launch, its offset ids.
        tables: ``"output_stationary"``: the [K, n_rows] neighbour table per
            direction (``"forward"`` / ``"backward"``), built on first use.
    """

    descs: list[tuple[torch.Tensor, int]] | None
    offset_lists: list[torch.Tensor] | None
    tables: dict[str, torch.Tensor] = field(default_factory=dict)

    def table(self, kmap: KernelMap, counts: tuple[int, ...], backward: bool) -> torch.Tensor:
        key = "backward" if backward else "forward"
        if key not in self.tables:
            src, dst, n_rows = direction(kmap, backward)
            self.tables[key] = neighbour_table(src, dst, counts, n_rows)
        return self.tables[key]


def launch_data(kmap: KernelMap, plan: ExecutionPlan) -> LaunchData:
    """The :class:`LaunchData` of ``plan`` on ``kmap``, built and uploaded on first use (kept in ``kmap.plans``)."""
    key = ("triton-launch", plan.groups, plan.dataflow)
    hit = kmap.plans.get(key)
    if hit is None:
        if plan.dataflow == "atomic":
            hit = LaunchData(_atomic_descriptors(kmap, plan.groups), None)
        else:
            hit = LaunchData(None, _offset_lists(kmap, plan.groups))
        kmap.plans[key] = hit
    return hit


def _sparse_matmul(x: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, plan: ExecutionPlan,
                   launch: LaunchData, backward: bool) -> torch.Tensor:  # fmt: skip
    """One pass over the map in ``plan.dataflow`` (``backward``: the transposed map): fp32 [n_rows, Cout]."""
    src, dst, n_rows = direction(kmap, backward)
    if plan.dataflow == "atomic":
        out = torch.zeros((n_rows, weight.shape[2]), dtype=torch.float32, device=x.device)
        gather_gemm_scatter(x, weight, out, src, dst, launch.descs, plan.tiles, plan.tf32)
        return out
    out = torch.empty((n_rows, weight.shape[2]), dtype=torch.float32, device=x.device)
    table = launch.table(kmap, plan.groups.counts, backward)
    implicit_gemm(x, weight, out, table, launch.offset_lists, plan.tiles, plan.tf32)
    return out


def run_pass(x: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, plan: ExecutionPlan,
             backward: bool) -> torch.Tensor:  # fmt: skip
    """One pass over the map in ``x.dtype`` (``backward``: the transposed map, the input gradient's pass).

    ``kmap`` is a :class:`KernelMap` or a :class:`~torchsparse_lite.kmap.kernel_map.MapPairs`
    (what the ``conv_triton`` custom op rebuilds); ``weight`` is [K, Cin, Cout]
    (transposed for the backward pass).
    """
    return _sparse_matmul(x, weight, kmap, plan, launch_data(kmap, plan), backward).to(x.dtype)


def run_weight_grad(feats: torch.Tensor, grad_out: torch.Tensor, kmap: KernelMap, plan: ExecutionPlan) -> torch.Tensor:
    """``grad_weight[k] = feats[in_k].T @ grad_out[out_k]`` (split-row kernel): [K, Cin, Cout] in ``feats.dtype``."""
    grad = weight_grad(feats, grad_out, kmap.in_idx, kmap.out_idx, kmap.counts, plan.tiles, plan.tf32)
    return grad.to(feats.dtype)


class TritonConvFunction(torch.autograd.Function):
    """Autograd function of the Triton path: executes an :class:`ExecutionPlan` with ``backend="triton"``."""

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap, plan: ExecutionPlan, launch: LaunchData):
        ctx.kmap, ctx.plan, ctx.launch = kmap, plan, launch
        ctx.save_for_backward(feats, weight)
        return _sparse_matmul(feats, weight, kmap, plan, launch, backward=False).to(feats.dtype)

    @staticmethod
    @once_differentiable  # the kernels' outputs carry no graph: a double backward must raise, not return zeros
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        plan: ExecutionPlan = ctx.plan
        grad_out = grad_out.contiguous().to(feats.dtype)
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = _sparse_matmul(grad_out, weight.transpose(1, 2), kmap, plan, ctx.launch, backward=True)
            grad_feats = grad_feats.to(feats.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = run_weight_grad(feats, grad_out, kmap, plan).to(weight.dtype)
        return grad_feats, grad_weight, None, None, None


def plan_tiles(tiles: TileConfig | None, cin: int, cout: int, dtype: torch.dtype, tf32: bool) -> TileConfig:
    """``tiles`` if given (a :class:`TileConfig`), else the per-precision defaults for this device mode."""
    if tiles is not None and not isinstance(tiles, TileConfig):
        raise TypeError(f"tiles must be a TileConfig or None, got {type(tiles).__name__}")
    return tiles or default_tiles(cin, cout, is_interpreted(gather_gemm_scatter_kernel), dtype, tf32)


def check_runnable(feats: torch.Tensor) -> None:
    """Triton kernels need CUDA tensors, or the interpreter for CPU tensors."""
    if feats.is_cuda or (feats.device.type == "cpu" and (is_interpreted(gather_gemm_scatter_kernel) or capturing())):
        return
    raise ValueError(
        f"the Triton backend needs CUDA tensors (got {feats.device}); on the CPU set TRITON_INTERPRET=1 before "
        "torchsparse_lite.kernels is first imported, or use backend='torch'"
    )


def run_plan(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, plan: ExecutionPlan) -> torch.Tensor:
    """Execute a Triton :class:`ExecutionPlan`: [n_in, Cin] -> [n_out, Cout] in ``feats.dtype`` (fp32 accumulation)."""
    check_runnable(feats)
    if plan.backend != "triton":
        raise ValueError(f"run_plan executes Triton plans, got a {plan.backend!r} plan")
    if feats.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"feats must be float32, float16 or bfloat16 for the Triton path, got {feats.dtype}")
    if weight.dtype != feats.dtype:
        raise TypeError(f"weight is {weight.dtype} but feats {feats.dtype}; cast one to match")
    if weight.device != feats.device:
        raise ValueError(f"weight is on {weight.device} but feats on {feats.device}; move one with .to()")
    if kmap.in_idx.device != feats.device:
        raise ValueError(f"kmap is on {kmap.in_idx.device} but feats on {feats.device}; move one with .to()")
    return TritonConvFunction.apply(feats, weight, kmap, plan, launch_data(kmap, plan))


def sparse_conv_triton(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    grouping: str | GroupingConfig = "separate",
    *,
    dataflow: str | None = None,
    allow_tf32: bool = False,
    tiles: TileConfig | None = None,
    deterministic: bool = False,
) -> torch.Tensor:
    """Sparse convolution with the Triton kernels and explicit settings (the engine config is not read).

    ``torchsparse_lite.functional.sparse_conv(..., backend="triton")`` is the
    entry point that fills settings from the config; this one plans from its
    arguments alone.

    Args:
        feats: [n_in, Cin] fp32, fp16 or bf16 (CUDA, or CPU under ``TRITON_INTERPRET=1``).
        weight: [K, Cin, Cout], same dtype.
        kmap: the conv's :class:`KernelMap` on the same device.
        grouping: strategy name or :class:`GroupingConfig` (one launch per group).
        dataflow: ``"atomic"``, ``"output_stationary"`` or None
            (output-stationary when ``deterministic``, else atomic).
        allow_tf32: TF32 tensor cores for fp32 inputs.
        tiles: tile sizes; None picks :func:`default_tiles` for the dtype and precision.
        deterministic: bit-reproducible (refuses ``dataflow="atomic"``).

    Returns:
        [n_out, Cout] in ``feats.dtype`` (accumulated in fp32).
    """
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {allow_tf32!r}")
    if dataflow is not None and dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS} or None, got {dataflow!r}")
    if deterministic and dataflow == "atomic":
        raise ValueError("dataflow='atomic' scatters with atomics and is not reproducible; with "
                         "deterministic=True use dataflow='output_stationary' (or None)")  # fmt: skip
    check_runnable(feats)
    groups = plan_groups(kmap.counts, as_grouping(grouping), kmap.identity_offset, kmap.symmetric)
    flow = dataflow or ("output_stationary" if deterministic else "atomic")
    tiles = plan_tiles(tiles, int(weight.shape[1]), int(weight.shape[2]), feats.dtype, allow_tf32)
    plan = ExecutionPlan("triton", groups, deterministic=deterministic, dataflow=flow, tf32=allow_tf32, tiles=tiles)
    return run_plan(feats, weight, kmap, plan)


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
