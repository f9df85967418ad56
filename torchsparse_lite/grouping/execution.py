"""The execution plan of one sparse conv: every setting the executors need, decided once.

:func:`torchsparse_lite.functional.plan.plan_execution` resolves a call's
arguments and the engine config into an :class:`ExecutionPlan`; the PyTorch
executor (:mod:`.torch_exec`) and the Triton launcher (``kernels.conv``) read
only the plan, never the config. A plan is frozen and hashable, and is cached
on the :class:`~torchsparse_lite.kmap.KernelMap` it was made for
(``KernelMap.plans``), next to the launch descriptors the Triton path
uploads for it, so a network that reuses a map plans and uploads once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .plan import GroupPlan

EXECUTORS = ("torch", "triton")
SCATTERS = ("index_add", "segment")  # the PyTorch path's scatters (see ExecutionPlan.scatter)


@dataclass(frozen=True)
class ExecutionPlan:
    """How one conv runs.

    Attributes:
        backend: ``"torch"`` (batched matmuls, :mod:`.torch_exec`) or ``"triton"``.
        groups: the grouping plan (every strategy, ``"separate"`` included).
        chunk_rows: PyTorch path; most rows gathered at once: per offset with
            the ``index_add`` scatter, per block with ``segment``.
        deterministic: results are bit-identical run after run.
        ordered_scatter: PyTorch path only; scatter a group's offsets one at a
            time. Within one offset every output row appears at most once, so
            each ``index_add_`` is free of colliding atomics: set on CUDA in
            deterministic mode (CPU ``index_add_`` is sequential anyway).
            Ignored by the ``segment`` scatter, which has no atomics.
        dataflow: Triton only; ``"atomic"`` or ``"output_stationary"``.
        tf32: Triton only; fp32 multiplies on TF32 tensor cores.
        tiles: Triton only; the launch's ``kernels.tiles.TileConfig``.
        scatter: PyTorch path only; ``"index_add"`` (``out.index_add_`` per
            offset) or ``"segment"`` (every GEMM output of a block of output
            rows summed per row by one ``embedding_bag``, :mod:`.segments`;
            the CPU default, where that sum is 2-3x faster than ``index_add_``).
    """

    backend: str
    groups: GroupPlan
    chunk_rows: int = 1 << 17
    deterministic: bool = False
    ordered_scatter: bool = False
    dataflow: str | None = None
    tf32: bool = False
    tiles: Any = None
    scatter: str = "index_add"

    def __post_init__(self) -> None:
        if self.backend not in EXECUTORS:
            raise ValueError(f"an execution plan's backend is one of {EXECUTORS}, got {self.backend!r}")
        if not isinstance(self.groups, GroupPlan):
            raise TypeError(f"groups must be a GroupPlan, got {type(self.groups).__name__}")
        if not isinstance(self.chunk_rows, int) or self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive int, got {self.chunk_rows!r}")
        if self.scatter not in SCATTERS:
            raise ValueError(f"scatter must be one of {SCATTERS}, got {self.scatter!r}")
        if self.backend == "triton" and (self.dataflow is None or self.tiles is None):
            raise ValueError("a Triton execution plan needs its dataflow and tiles")
        if self.deterministic and self.dataflow == "atomic":
            raise ValueError("dataflow='atomic' scatters with atomics and cannot be part of a deterministic plan")


def default_scatter(device_type: str) -> str:
    """The PyTorch path's scatter on a device type: ``"segment"`` on the CPU, ``"index_add"`` elsewhere.

    CUDA keeps ``index_add_`` (the Triton path is the default there; the segment
    scatter has not been measured on a GPU).
    """
    return "segment" if device_type == "cpu" else "index_add"
