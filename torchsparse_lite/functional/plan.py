"""Resolve a sparse conv's arguments and the engine config into one frozen execution plan.

This is the one place where execution settings meet the config: every
argument left as None takes the active :class:`~torchsparse_lite.config.EngineConfig`'s
value, each is validated once, and the result is an
:class:`~torchsparse_lite.grouping.ExecutionPlan` cached on the kernel map
(``KernelMap.plans``), per settings, grouping, channels and dtype. The
executors below never read the config.

Determinism (``deterministic=True``) is decided here for every backend: a
grouping tuner takes its fixed, timing-free choice; the Triton path runs the
output-stationary dataflow (no atomics; its weight gradient never uses
atomics) and refuses ``dataflow="atomic"``; the PyTorch path on CUDA scatters
a group's offsets one at a time so no two updates of one row race. On the
CPU the PyTorch path sums its GEMM outputs per output row with one
``embedding_bag`` per block (``scatter="segment"``, sequential within a row,
hence deterministic too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import BACKENDS, DATAFLOWS, resolve
from ..grouping import ExecutionPlan, GroupingConfig, default_scatter, plan_groups
from ..kmap.kernel_map import KernelMap


@dataclass(frozen=True)
class ExecutionSettings:
    """One call's execution knobs after the config filled the gaps (part of the plan cache key)."""

    backend: str  # "torch" or "triton" ("auto" already decided by the device)
    device_type: str  # the features' device type ("cpu", "cuda")
    deterministic: bool
    chunk_rows: int
    tf32: bool
    dataflow: str | None  # None: the backend's default for ``deterministic``
    tiles: object | None  # a kernels.tiles.TileConfig, or None for the per-precision defaults


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or None, got {value!r}")
    return value


def resolve_settings(
    device: torch.device,
    *,
    backend: str | None = None,
    deterministic: bool | None = None,
    chunk_rows: int | None = None,
    tf32: bool | None = None,
    dataflow: str | None = None,
    tiles: object | None = None,
) -> ExecutionSettings:
    """Fill None arguments from the config and validate everything once (``device``: the features')."""
    backend = resolve("backend", backend)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "triton" if device.type == "cuda" else "torch"
    deterministic = _check_bool("deterministic", resolve("deterministic", deterministic))
    tf32 = _check_bool("tf32", resolve("tf32", tf32))
    chunk_rows = resolve("chunk_rows", chunk_rows)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    if dataflow is not None:
        if dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {DATAFLOWS} or None, got {dataflow!r}")
        if backend != "triton":
            raise ValueError(f"dataflow={dataflow!r} is a setting of the Triton path, but backend is {backend!r}")
        if deterministic and dataflow == "atomic":
            raise ValueError(
                "dataflow='atomic' scatters with atomics and is not reproducible, but the engine is in "
                "deterministic mode; use dataflow='output_stationary' (or None) or set deterministic=False"
            )
    if tiles is not None and backend != "triton":
        raise ValueError(f"tiles are a setting of the Triton path, but backend is {backend!r}")
    return ExecutionSettings(backend, device.type, deterministic, chunk_rows, tf32, dataflow, tiles)


def plan_execution(
    kmap: KernelMap, weight: torch.Tensor, settings: ExecutionSettings, grouping: GroupingConfig
) -> ExecutionPlan:
    """The :class:`ExecutionPlan` of a conv with ``weight`` [K, Cin, Cout] on ``kmap`` (cached on the map)."""
    cin, cout = int(weight.shape[1]), int(weight.shape[2])
    key = ("plan", settings, grouping, cin, cout, weight.dtype)
    hit = kmap.plans.get(key)
    if hit is not None:
        return hit
    groups = plan_groups(kmap.counts, grouping, kmap.identity_offset, kmap.symmetric)
    if settings.backend == "triton":
        from .. import kernels  # noqa: PLC0415 - Triton is imported only when used

        flow = settings.dataflow or ("output_stationary" if settings.deterministic else "atomic")
        tiles = kernels.plan_tiles(settings.tiles, cin, cout, weight.dtype, settings.tf32)
        plan = ExecutionPlan("triton", groups, settings.chunk_rows, settings.deterministic, False, flow,
                             settings.tf32, tiles)  # fmt: skip
    else:
        ordered = settings.deterministic and settings.device_type == "cuda"
        scatter = default_scatter(settings.device_type)
        plan = ExecutionPlan("torch", groups, settings.chunk_rows, settings.deterministic, ordered, scatter=scatter)
    kmap.plans[key] = plan
    return plan
