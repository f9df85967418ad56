"""Engine-wide defaults as a frozen dataclass held in a context variable.

The one source of truth is a context variable: the active :class:`EngineConfig` lives
in a :class:`contextvars.ContextVar`, is replaced (never mutated) by
:func:`set_config`, and can be overridden for a block with :func:`use_config`.
The config only supplies defaults for arguments left as ``None``, and it is
read at two places only, never below them: map building reads
``kmap_builder`` and ``downsample_mode`` (``nn.maps`` / ``kmap.build_kernel_map``
take both as arguments, as do ``nn.Conv3d`` and ``nn.MaxPool3d``), and
:func:`torchsparse_lite.functional.sparse_conv` turns ``backend``,
``grouping``, ``deterministic``, ``chunk_rows`` and ``tf32`` (each also an
argument there, with ``dataflow`` and ``tiles``) into one frozen
:class:`~torchsparse_lite.grouping.ExecutionPlan` that the executors and
kernels read. ``nn.Conv3d`` takes ``backend`` and ``grouping`` per layer.

Under ``torch.compile`` the context variable is out of reach (Dynamo cannot
trace ``ContextVar.get``): traced code reads :data:`_ACTIVE`, a module-level
copy of the config that every eager :func:`get_config`, :func:`set_config`,
:func:`use_config` and every trace itself (for real, while Dynamo traces)
set to the calling context's. Dynamo guards on the fields it reads, so a
compiled network re-traces when the config changes. A graph called from
another thread or context, with no config read in between, is not told
apart: pass per-layer arguments there.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch

KMAP_BUILDERS = ("auto", "hash", "sort", "triton_hash", "triton_sort")  # triton_*: the Triton indexes by name
BACKENDS = ("auto", "torch", "triton")
DOWNSAMPLE_MODES = ("spconv", "minkowski")
GROUPING_STRATEGIES = ("separate", "fixed", "adaptive", "dense")
DATAFLOWS = ("atomic", "output_stationary")  # the Triton path's two dataflows (see kernels.conv)


@dataclass(frozen=True)
class EngineConfig:
    """Defaults used when a call leaves the matching argument as ``None``.

    Attributes:
        kmap_builder: ``"hash"`` (open-addressing table), ``"sort"`` (sorted
            keys + binary search) or ``"auto"`` (sort on CPU, hash on GPU).
            All give identical maps.
        backend: ``"auto"`` (Triton on CUDA tensors, PyTorch on CPU tensors),
            ``"torch"`` or ``"triton"``.
        grouping: name of the grouping strategy for the gather-GEMM-scatter
            (``"separate"`` is the per-offset baseline).
        downsample_mode: ``"spconv"`` (outputs are the stride-grid positions
            whose kernel window holds an input, as a dense ``conv3d`` with
            padding ``k//2`` would give) or ``"minkowski"`` (unique ``c // s``).
        deterministic: when True, every path gives bit-identical results run
            after run (no atomics on the GPU).
        chunk_rows: most map rows gathered at once (per offset on CUDA's
            PyTorch path, per block of output rows on the CPU's, where blocks
            are also kept under 8 MiB a temporary); bounds the gather buffer
            to ``chunk_rows * C`` elements.
        tf32: fp32 convs on the Triton path multiply on TF32 tensor cores
            (10 mantissa bits, ~1e-3 relative error, several times faster)
            instead of full-precision FMA. Off by default, and deliberately
            independent of ``torch.backends.cuda.matmul.allow_tf32``: a script
            calling ``torch.set_float32_matmul_precision("high")`` for its
            dense layers does not change the sparse convs' precision.
    """

    kmap_builder: str = "auto"
    backend: str = "auto"
    grouping: str = "separate"
    downsample_mode: str = "spconv"
    deterministic: bool = False
    chunk_rows: int = 1 << 17
    tf32: bool = False

    def __post_init__(self) -> None:
        _check_choice("kmap_builder", self.kmap_builder, KMAP_BUILDERS)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("downsample_mode", self.downsample_mode, DOWNSAMPLE_MODES)
        _check_grouping(self.grouping)
        if not isinstance(self.chunk_rows, int) or self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive int, got {self.chunk_rows!r}")
        if not isinstance(self.tf32, bool):
            raise TypeError(f"tf32 must be a bool, got {self.tf32!r}")


def _check_grouping(value: object) -> None:
    """A strategy name, a ``GroupingConfig`` (has ``strategy``) or a ``GroupingTuner`` (has ``choose``)."""
    if isinstance(value, str):
        _check_choice("grouping", value, GROUPING_STRATEGIES)
    elif not (hasattr(value, "strategy") or callable(getattr(value, "choose", None))):
        raise TypeError(
            f"grouping must be a strategy name {GROUPING_STRATEGIES}, a GroupingConfig or a GroupingTuner, "
            f"got {type(value).__name__}"
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


_CONFIG: contextvars.ContextVar[EngineConfig] = contextvars.ContextVar(
    "torchsparse_lite_config", default=EngineConfig()  # noqa: B039 - frozen, hence immutable
)


_ACTIVE: EngineConfig = _CONFIG.get()  # what traced code reads (see the module doc)


def get_config() -> EngineConfig:
    """Return the active engine configuration."""
    if torch.compiler.is_compiling():
        _activate_traced()  # runs for real while Dynamo traces: the tracing context's config
        return _ACTIVE  # a module global: Dynamo guards on what the graph reads of it
    return _activate(_CONFIG.get())


def _activate(config: EngineConfig) -> EngineConfig:
    global _ACTIVE
    _ACTIVE = config
    return config


@torch.compiler.assume_constant_result
def _activate_traced() -> None:
    _activate(_CONFIG.get())


def set_config(**changes: object) -> EngineConfig:
    """Replace the active configuration with a copy that has ``changes`` applied.

    Returns the new configuration. Unknown names raise ``TypeError``.
    """
    new = dataclasses.replace(_CONFIG.get(), **changes)
    _CONFIG.set(new)
    _activate(new)
    return new


@contextlib.contextmanager
def use_config(**changes: object) -> Iterator[EngineConfig]:
    """Context manager applying ``changes`` to the configuration for a block."""
    token = _CONFIG.set(dataclasses.replace(_CONFIG.get(), **changes))
    _activate(_CONFIG.get())
    try:
        yield _CONFIG.get()
    finally:
        _CONFIG.reset(token)
        _activate(_CONFIG.get())


def resolve(name: str, value: object) -> object:
    """Return ``value`` or, when it is None, the active config's ``name``."""
    return getattr(get_config(), name) if value is None else value
