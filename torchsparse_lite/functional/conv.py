"""``sparse_conv``: one entry point that plans a sparse conv once and runs it on a backend.

The call resolves its arguments and the engine config into an
:class:`~torchsparse_lite.grouping.ExecutionPlan` (:mod:`.plan`; cached on
the kernel map), then executes it: the PyTorch gather -> GEMM -> scatter
(:mod:`torchsparse_lite.grouping.torch_exec`, the CPU path and the reference
the Triton kernels are tested against) or the fused Triton kernels
(``torchsparse_lite.kernels``, imported only when used). In a traced graph
(``torch.compile``, ``torch.export``) the conv is one custom op instead
(:mod:`.traced`).
"""

from __future__ import annotations

import torch

from ..config import resolve
from ..grouping import ExecutionPlan, GroupingConfig, GroupingTuner, TorchConvFunction, as_grouping, torch_plan
from ..kmap.kernel_map import KernelMap
from .plan import ExecutionSettings, plan_execution, resolve_settings
from .traced import traced_conv


class SparseConvFunction:
    """Deprecated: the PyTorch path with one GEMM per offset; use ``sparse_conv(..., backend="torch")``.

    ``SparseConvFunction.apply(feats, weight, kmap, chunk_rows)`` runs the
    ``"separate"`` plan through the one PyTorch executor.
    """

    @staticmethod
    def apply(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, chunk_rows: int = 1 << 17) -> torch.Tensor:
        return TorchConvFunction.apply(feats, weight, kmap, torch_plan(kmap, "separate", chunk_rows))


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


def execute(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, plan: ExecutionPlan) -> torch.Tensor:
    """Run a planned conv: [n_in, Cin] features -> [n_out, Cout], differentiable in ``feats`` and ``weight``."""
    if plan.backend == "triton":
        from .. import kernels  # noqa: PLC0415 - Triton is imported only when used

        return kernels.run_plan(feats, weight, kmap, plan)
    return TorchConvFunction.apply(feats, weight, kmap, plan)


def choose_grouping(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    settings: ExecutionSettings,
    grouping: str | GroupingConfig | GroupingTuner | None,
) -> GroupingConfig:
    """The grouping to plan with: a name or config as given, or a tuner's choice (fixed when deterministic)."""
    grouping = resolve("grouping", grouping)
    if not isinstance(grouping, GroupingTuner):
        return as_grouping(grouping)
    if settings.deterministic:
        # A timed choice can differ run to run, and groupings sum in different orders.
        return grouping.fixed_choice(kmap)

    def run(cfg: GroupingConfig) -> torch.Tensor:
        return execute(feats.detach(), weight.detach(), kmap, plan_execution(kmap, weight, settings, cfg))

    return grouping.choose(feats, weight, kmap, run, tag=settings.backend)


def sparse_conv(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kmap: KernelMap,
    *,
    backend: str | None = None,
    grouping: str | GroupingConfig | GroupingTuner | None = None,
    tf32: bool | None = None,
    deterministic: bool | None = None,
    chunk_rows: int | None = None,
    dataflow: str | None = None,
    tiles: object | None = None,
) -> torch.Tensor:
    """Apply a sparse convolution given its kernel map.

    Every argument left as None takes the engine config's value
    (:mod:`torchsparse_lite.config`); the resolved settings become one
    :class:`~torchsparse_lite.grouping.ExecutionPlan`, cached on ``kmap``.

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
        tf32: fp32 on TF32 tensor cores on the Triton backend; never follows
            torch's global ``allow_tf32`` flag. The torch backend is the fp32
            reference and ignores it.
        deterministic: bit-identical results run after run on every backend
            (see :mod:`.plan` for what that replaces).
        chunk_rows: most map rows gathered at once (PyTorch path; per offset,
            or per block of output rows with the CPU's segment scatter).
        dataflow: Triton only; ``"atomic"`` or ``"output_stationary"``
            (None: output-stationary when deterministic, else atomic).
        tiles: Triton only; a ``kernels.TileConfig`` (None: per-precision defaults).

    Returns:
        [n_out, Cout] output features.
    """
    check_conv_inputs(feats, weight, kmap)
    settings = resolve_settings(
        feats.device, backend=backend, deterministic=deterministic, chunk_rows=chunk_rows, tf32=tf32,
        dataflow=dataflow, tiles=tiles,
    )  # fmt: skip
    if torch.compiler.is_compiling():
        return traced_conv(feats, weight, kmap, settings, grouping)
    chosen = choose_grouping(feats, weight, kmap, settings, grouping)
    return execute(feats, weight, kmap, plan_execution(kmap, weight, settings, chosen))
